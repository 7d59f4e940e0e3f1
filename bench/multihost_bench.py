#!/usr/bin/env python3
"""Several hosts, one queue (issue 14; make bench): drain rate with 1, 2 and
3 hosts, and the time to recover the jobs of a host that dies.

Topology, as tests/integration/multihost_test.cc: network namespaces made
here with `ip netns` (named djb-<pid>-..., deleted at the end): a
"services" namespace with a bridge at 198.18.0.1/24 (the benchmarking
range, which exists only inside these namespaces; nothing is routed
anywhere), where redis-server, PostgreSQL (the Djinn tables and the
least-privilege role) and the test HTTP server (tests/harness/httpd.py)
run, and one namespace per host, whose eth0 (198.18.0.11, .12, .13) is a
veth to that bridge. Each host runs its own djinn-consumer (W workers) from
its own namespace against those servers; all hosts share one image store
(as an NFS mount would be shared). This process works from the services
namespace (setns) and the machine's own namespace is never changed.

Each batch: N image rows, the hosts started and idle, N download_job jobs
for http://198.18.0.1:<port>/big/<size>?job=<n> pushed at once as curlyq
v0.4.0 does (HSETNX + RPUSH, pipelined), timed until jobs:data is empty;
every row must then be finished without error and every image stored.
During the drain it reads the CPU time of each namespace's processes
(utime + stime + reaped children's, /proc/<pid>/stat) and of the machine
(/proc/stat), so the report says what the drain was bound by.

Scenarios (each round; rounds alternate the order):
  downloads, 1/2/3 hosts x W workers, and 1 host x 3W workers (the same
  workers as 3 hosts, on one host: more hosts vs more workers);
  pings, 1 and 3 hosts (no download: the queue's own ceiling).
Then once: recovery. 3 hosts, N downloads; when 30 % are done, host 1's
process group (master, workers, download processes) gets SIGKILL; the
other masters requeue its in-flight jobs once its heartbeat is older than
queue_consumer_timeout (10 s, the minimum; masters heartbeat every 5 s and
look for orphans every 5 s). Prints kill -> those jobs finished elsewhere.

All hosts here share this machine's CPUs: a ratio near 1 means the work
was bound by the machine (its CPUs), not by the queue; the report's CPU
columns give the per-job cost to size real hosts with (docs/scaling.md).

Environment: DJINN_CONSUMER (binary, default ./djinn-consumer),
BENCH_MULTIHOST_JOBS (N, default 1000), BENCH_MULTIHOST_WORKERS (W,
default 2), BENCH_MULTIHOST_SIZE (image bytes, default 64k),
BENCH_MULTIHOST_PINGS (default 20000; 0: no ping scenarios),
BENCH_MULTIHOST_ROUNDS (default 2). Needs root and iproute2; without them
it says so and exits 0. Exit status 1 when a job failed.
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Servers, children, envelope, loadavg, median, parse_size,  # noqa: E402
                      resp, title, wait_for)

N = int(os.environ.get("BENCH_MULTIHOST_JOBS", "1000"))
W = int(os.environ.get("BENCH_MULTIHOST_WORKERS", "2"))
SIZE = parse_size(os.environ.get("BENCH_MULTIHOST_SIZE", "64k"))
PINGS = int(os.environ.get("BENCH_MULTIHOST_PINGS", "20000"))
ROUNDS = int(os.environ.get("BENCH_MULTIHOST_ROUNDS", "2"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))
HOSTS = 3
PREFIX = "198.18.0"
CONSUMER_TIMEOUT = 10
KILL_AT = 0.3
USER_ID = 1

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def enter(path):
    """This thread (the process, when single-threaded) into the network
    namespace at path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    finally:
        os.close(fd)


def run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("bench: %s: %s" % (" ".join(argv), (r.stdout + r.stderr).strip()))


class Netns:
    """A named network namespace (ip netns), deleted by destroy()."""

    def __init__(self, label):
        self.name = "djb-%d-%s" % (os.getpid(), label)
        self.path = "/run/netns/" + self.name
        self.created = False

    def create(self):
        run("ip", "netns", "add", self.name)
        self.created = True
        self.ip("link", "set", "lo", "up")

    def ip(self, *args):
        run("ip", "-n", self.name, *args)

    def pids(self):
        try:
            want = os.stat(self.path)
        except OSError:
            return []
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    st = os.stat("/proc/%s/ns/net" % d)
                except OSError:
                    continue  # gone, or a zombie
                if (st.st_ino, st.st_dev) == (want.st_ino, want.st_dev):
                    out.append(int(d))
        return out

    def kill_all(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.pids() if p != os.getpid()]
            if not pids or time.monotonic() > deadline:
                return not pids
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def destroy(self):
        if self.created:
            self.kill_all()
            subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
            self.created = False


def cpu_of(pids):
    """Sum of utime + stime + cutime + cstime seconds of pids."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])
    return total / hz


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def machine_cpu():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class Host:
    def __init__(self, bench, i):
        self.bench, self.i = bench, i
        self.ns = Netns("h%d" % i)
        self.proc = None
        self.keys = []

    def start(self, workers):
        b = self.bench
        d = os.path.join(b.tmp, "h%d" % self.i)
        os.makedirs(d, exist_ok=True)
        self.log = os.path.join(d, "consumer.log")
        conf = os.path.join(d, "consumer.conf")
        with open(conf, "w") as f:
            f.write('log = { level = "info"; file = "%s"; };\n' % self.log)
            f.write("workers = %d;\nattempts = 3;\nqueue_consumer_timeout = %d;\n"
                    % (workers, CONSUMER_TIMEOUT))
            f.write('database = { addr = "%s:%d"; name = "djinn"; username = "djinn_consumer"; '
                    'password = "%s"; };\n' % (b.svc_addr, b.pg_port, b.pg_password))
            f.write('redis = { addr = "%s:%d"; };\n' % (b.svc_addr, b.redis_port))
            f.write('store = { images = { type = "file"; path = "%s"; }; };\n' % b.store)
            f.write("download = { timeout = 600; allow_private = true; };\n")
        before = set(b.consumers())
        # Forked in the services namespace; the child enters the host's.
        self.proc = subprocess.Popen([BIN, "-config", conf], preexec_fn=lambda: enter(self.ns.path),
                                     start_new_session=True)
        self.workers = []

        def idle():
            if self.proc.poll() is not None:
                raise SystemExit("bench: host %d: %s exited with %d; see %s"
                                 % (self.i, BIN, self.proc.returncode, self.log))
            self.workers = [c for c in children(self.proc.pid)
                            if title(c).startswith("djinn-consumer: worker ") and title(c).endswith(" idle")]
            self.keys = [k for k in b.consumers() if k not in before]
            return len(self.workers) == workers and len(self.keys) == workers
        wait_for(idle, 30, "host %d's %d worker(s) (see %s)" % (self.i, workers, self.log))

    def stop(self):
        p, self.proc = self.proc, None
        if p is None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:
            raise SystemExit("bench: host %d: djinn-consumer exited with %d; see %s"
                             % (self.i, p.returncode, self.log))

    def kill(self):
        """SIGKILL to its process group, then to whatever is left in its
        namespace; returns how many processes outlived the group kill."""
        p, self.proc = self.proc, None
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 3
        while self.ns.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        left = len(self.ns.pids())
        self.ns.kill_all()
        return left


class Bench(Servers):
    def __init__(self):
        self.svc_addr = PREFIX + ".1"
        Servers.__init__(self, "djinn-mhbench.", listen_also=self.svc_addr, clients=PREFIX + ".0/24")
        self.svc = Netns("svc")
        self.hosts = [Host(self, i) for i in range(HOSTS)]
        self.own_ns = None
        self.batches = 0

    def network(self):
        s = self.svc
        s.create()
        s.ip("link", "add", "br0", "type", "bridge")
        s.ip("addr", "add", self.svc_addr + "/24", "dev", "br0")
        s.ip("link", "set", "br0", "up")
        for h in self.hosts:
            h.ns.create()
            port = "vh%d" % h.i
            s.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns.name)
            s.ip("link", "set", port, "master", "br0")
            s.ip("link", "set", port, "up")
            h.ns.ip("addr", "add", "%s.%d/24" % (PREFIX, 11 + h.i), "dev", "eth0")
            h.ns.ip("link", "set", "eth0", "up")
        # From here on this process (and what it starts) is in the services
        # namespace.
        self.own_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        enter(s.path)

    def consumers(self):
        return [k.decode() for k in self.redis.cmd("ZRANGE", "jobs:consumers", 0, -1)]

    def prepare(self, kind, n):
        """Rows (downloads) and the jobs' RESP bytes."""
        self.batches += 1
        tag = "b%d" % self.batches
        out = bytearray()
        if kind == "ping":
            payload = b'{"job":"ping"}'
            for i in range(n):
                jid = "%s-%d" % (tag, i)
                out += resp("HSETNX", "jobs:data", jid, envelope(jid, payload))
                out += resp("RPUSH", "jobs:active", jid)
            return bytes(out)
        self.sql("djinn", "TRUNCATE images, image_downloads")
        rows = self.sql("djinn", """
            WITH i AS (INSERT INTO images (user_id, author_id, driver, hash, name)
                       SELECT %d, %d, 'qemu', '%s-' || g, 'bench' FROM generate_series(1, %d) g RETURNING id)
            INSERT INTO image_downloads (image_id, source) SELECT id, '%s' || id FROM i RETURNING id, image_id
            """ % (USER_ID, USER_ID, tag, n, self.url)).split()
        if len(rows) != n:
            raise SystemExit("bench: inserted %d rows, not %d" % (len(rows), n))
        for row in rows:
            dl, image = (int(x) for x in row.split("|"))
            jid = "%s-%d" % (tag, dl)
            payload = json.dumps({"job": "download_job", "id": dl, "image_id": image,
                                  "source": self.url + str(image)}).encode()
            out += resp("HSETNX", "jobs:data", jid, envelope(jid, payload))
            out += resp("RPUSH", "jobs:active", jid)
        return bytes(out)

    def check(self, kind, n):
        dead = self.redis.cmd("ZCARD", "jobs:dead")
        if dead:
            raise SystemExit("bench: %d job(s) in the dead set" % dead)
        if kind == "ping":
            return
        r = self.sql("djinn", "SELECT count(*) FILTER (WHERE error IS NULL AND finished_at IS NOT NULL) "
                              "|| ' ' || count(*) || ' ' || coalesce(min(error), '') FROM image_downloads")
        ok, total, err = (r.split(" ", 2) + [""])[:3]
        if int(ok) != n or int(total) != n:
            raise SystemExit("bench: %s of %s downloads finished without error; first error: %s"
                             % (ok, total, err))
        d = os.path.join(self.store, str(USER_ID), "qemu")
        stored = [x for x in os.listdir(d) if not x.startswith(".")]
        if len(stored) != n or any(os.path.getsize(os.path.join(d, x)) != SIZE for x in stored):
            raise SystemExit("bench: %d images stored, not %d of %d bytes (%s)" % (len(stored), n, SIZE, d))
        shutil.rmtree(os.path.join(self.store, str(USER_ID)))

    def snapshot(self, hosts):
        """CPU seconds so far: per host namespace, redis, postgres, httpd;
        and the machine's busy/total jiffies."""
        svc = [p for p in self.svc.pids() if p != os.getpid()]
        return {
            "hosts": [cpu_of(h.ns.pids()) for h in hosts],
            "redis": cpu_of([p for p in svc if comm(p).startswith("redis")]),
            "postgres": cpu_of([p for p in svc if comm(p).startswith("postgres")]),
            "httpd": cpu_of([p for p in svc if comm(p).startswith("python")]),
            "machine": machine_cpu(),
        }

    @staticmethod
    def cost(a, b, n, took):
        """Per job microseconds of CPU, and the machine's CPUs busy."""
        busy = (b["machine"][0] - a["machine"][0]) / max(1, b["machine"][1] - a["machine"][1])
        return {
            "consumer_us": sum(y - x for x, y in zip(a["hosts"], b["hosts"])) / n * 1e6,
            "redis_us": (b["redis"] - a["redis"]) / n * 1e6,
            "postgres_us": (b["postgres"] - a["postgres"]) / n * 1e6,
            "httpd_us": (b["httpd"] - a["httpd"]) / n * 1e6,
            "cpus_busy": busy * os.cpu_count(),
            "ours": (sum(y - x for x, y in zip(a["hosts"], b["hosts"])) + b["redis"] - a["redis"] +
                     b["postgres"] - a["postgres"] + b["httpd"] - a["httpd"]) / took,
            "redis_busy": (b["redis"] - a["redis"]) / took,
        }

    def drain(self, data, n, hosts, on_progress=None):
        """Pushes data (n jobs) and waits until jobs:data is empty; returns
        seconds taken. on_progress(done) is called while waiting."""
        t0 = time.monotonic()
        self.redis.send_ints(data, 2 * n)
        deadline = t0 + max(600, n / 5)
        while True:
            left = self.redis.cmd("HLEN", "jobs:data")
            if left == 0:
                return time.monotonic() - t0
            if on_progress:
                on_progress(n - left)
            if time.monotonic() > deadline:
                raise SystemExit("bench: the batch did not finish; see %s" % self.tmp)
            for h in hosts:
                if h.proc is not None and h.proc.poll() is not None:
                    raise SystemExit("bench: host %d died; see %s" % (h.i, h.log))
            time.sleep(0.005)

    def batch(self, kind, nhosts, workers, n):
        data = self.prepare(kind, n)
        hosts = self.hosts[:nhosts]
        for h in hosts:
            h.start(workers)
        a = self.snapshot(hosts)
        took = self.drain(data, n, hosts)
        b = self.snapshot(hosts)
        for h in hosts:
            h.stop()
        self.check(kind, n)
        return n / took, self.cost(a, b, n, took)

    def recovery(self, n):
        data = self.prepare("download", n)
        for h in self.hosts:
            h.start(W)
        victim = self.hosts[1]
        state = {}

        def progress(done):
            if "killed" in state:
                if "requeued" not in state and not set(victim.keys) & set(self.consumers()):
                    state["requeued"] = time.monotonic()
                if "recovered" not in state and all(
                        self.redis.cmd("HEXISTS", "jobs:data", j) == 0 for j in state["orphans"]):
                    state["recovered"] = time.monotonic()
                return
            if done >= KILL_AT * n:
                state["killed"] = time.monotonic()
                state["done_at_kill"] = done
                state["survivors"] = victim.kill()
                state["orphans"] = [j for k in victim.keys for j in self.redis.cmd("SMEMBERS", k)]
        t0 = time.monotonic()
        took = self.drain(data, n, self.hosts, progress)
        end = t0 + took
        recovered = state.get("recovered", end)
        requeued = state.get("requeued", recovered)
        for h in self.hosts:
            h.stop()
        self.check("download", n)
        before = state["done_at_kill"] / (state["killed"] - t0)
        return {"took": took, "rate": n / took, "before": before,
                "orphans": len(state["orphans"]), "requeue": requeued - state["killed"],
                "recovery": recovered - state["killed"], "survivors": state["survivors"]}

    def main(self):
        if os.geteuid() != 0:
            print("multihost benchmark: skipped: network namespaces need root")
            return 0
        if shutil.which("ip") is None:
            print("multihost benchmark: skipped: no ip (iproute2; make deps)")
            return 0
        if not os.access(BIN, os.X_OK):
            raise SystemExit("bench: build %s first (make)" % BIN)
        self.network()
        self.start_redis()
        self.start_pg()
        self.start_httpd()
        self.store = os.path.join(self.tmp, "store")
        os.makedirs(self.store)
        self.url = "http://%s:%d/big/%d?job=" % (self.svc_addr, self.http_port, SIZE)
        print("multihost benchmark: %d downloads of %s<n> (%d bytes), %d pings, %d worker(s) a host, "
              "%d round(s), %d CPUs shared by every host, store in %s"
              % (N, self.url, SIZE, PINGS, W, ROUNDS, os.cpu_count(), self.tmp))
        print("load average at start: %s" % loadavg())
        scenarios = [("downloads", 1, W), ("downloads", 2, W), ("downloads", 3, W),
                     ("downloads", 1, 3 * W)]
        if PINGS > 0:
            scenarios += [("pings", 1, W), ("pings", 3, W)]
        results = {}
        print("%-10s %5s %7s %5s %10s %12s %9s %11s %9s %10s %9s %10s" % (
            "kind", "hosts", "workers", "round", "jobs/s", "consumer us", "redis us", "postgres us",
            "httpd us", "CPUs busy", "ours", "redis busy"))
        for r in range(ROUNDS):
            for kind, nhosts, workers in (scenarios if r % 2 == 0 else scenarios[::-1]):
                n = N if kind == "downloads" else PINGS
                rate, c = self.batch("download" if kind == "downloads" else "ping", nhosts, workers, n)
                results.setdefault((kind, nhosts, workers), []).append((rate, c))
                print("%-10s %5d %7d %5d %10.1f %12.0f %9.0f %11.0f %9.0f %10.2f %9.2f %10.2f" % (
                    kind, nhosts, workers, r + 1, rate, c["consumer_us"], c["redis_us"], c["postgres_us"],
                    c["httpd_us"], c["cpus_busy"], c["ours"], c["redis_busy"]))
                sys.stdout.flush()
        rec = self.recovery(N)
        print("load average at end: %s" % loadavg())
        print()
        print("medians of %d round(s) (CPU: microseconds per job; 'CPUs busy': the machine's, of %d, "
              "'ours': what these processes used)" % (ROUNDS, os.cpu_count()))
        med = {}
        for key, xs in results.items():
            med[key] = median([x[0] for x in xs])
            c = {k: median([x[1][k] for x in xs]) for k in xs[0][1]}
            print("  %-10s %d host(s) x %d workers: %8.1f jobs/s  consumer %6.0f  redis %4.0f  "
                  "postgres %5.0f  httpd %5.0f  CPUs busy %.2f, ours %.2f" % (
                      key[0], key[1], key[2], med[key], c["consumer_us"], c["redis_us"],
                      c["postgres_us"], c["httpd_us"], c["cpus_busy"], c["ours"]))
        one = med[("downloads", 1, W)]
        print()
        print("downloads, ratio to 1 host (same run): 2 hosts %.2f, 3 hosts %.2f; "
              "1 host x %d workers %.2f" % (med[("downloads", 2, W)] / one, med[("downloads", 3, W)] / one,
                                           3 * W, med[("downloads", 1, 3 * W)] / one))
        per_round = []
        for r in range(ROUNDS):
            base = results[("downloads", 1, W)][r][0]
            per_round.append("%.2f/%.2f" % (results[("downloads", 2, W)][r][0] / base,
                                            results[("downloads", 3, W)][r][0] / base))
        print("  per round (2/1, 3/1): %s" % ", ".join(per_round))
        if PINGS > 0:
            print("pings, 3 hosts / 1 host: %.2f" % (med[("pings", 3, W)] / med[("pings", 1, W)]))
        print()
        print("recovery: 3 hosts x %d workers, %d downloads; host 1 killed (SIGKILL to its process group) "
              "after %d%% with %d job(s) in flight; %d process(es) outlived the group kill"
              % (W, N, int(KILL_AT * 100), rec["orphans"], rec["survivors"]))
        print("  requeued by another host %.2f s after the kill, finished elsewhere %.2f s after it "
              "(queue_consumer_timeout = %d s); drain %.1f jobs/s overall, %.1f before the kill"
              % (rec["requeue"], rec["recovery"], CONSUMER_TIMEOUT, rec["rate"], rec["before"]))
        return 1 if rec["survivors"] else 0

    def cleanup(self):
        for h in self.hosts:
            if h.proc is not None and h.proc.poll() is None:
                h.proc.kill()
                h.proc.wait()
        Servers.cleanup(self)
        if self.own_ns is not None:
            setns(self.own_ns)
            os.close(self.own_ns)
        for h in self.hosts:
            h.ns.destroy()
        self.svc.destroy()


if __name__ == "__main__":
    b = Bench()
    try:
        rc = b.main()
    finally:
        b.cleanup()
    sys.exit(rc)
