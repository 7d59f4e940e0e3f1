#!/usr/bin/env python3
"""download_job benchmark (make bench): throughput against honest anchors,
and the peak memory of the worker and its download processes.

Starts a private redis-server, PostgreSQL (the Djinn tables and the
least-privilege role) and the test HTTP server (tests/harness/httpd.py,
/big/<n>: generated in memory, begins with a qcow2 header) on free loopback
ports in a temporary directory (benchlib.Servers). Everything is written
into that directory, on one file system.

Single case: one image of --size bytes (1 GiB), djinn-consumer with one
worker. Each of --rounds rounds (5) times, in an order that rotates from
round to round:
  durable  curl -o FILE, then fsync(FILE) and fsync(its directory), timed
           together: what "downloaded and on disk" costs with curl;
  plain    curl -o FILE alone: ends with the last write(), the data only in
           the page cache (no flush at all);
  dd       dd if=/dev/zero of=FILE bs=1M count=N conv=fsync: the disk's own
           limit for writing N MiB durably;
  ours     a download_job for the same URL through the daemon, pushed as
           curlyq does (HSETNX + RPUSH + signal), timed from the push until
           the job is acked (after the row is finished): queue, row updates,
           the download process, writes with writeback, qcow2 check, fsync,
           rename, directory fsync.
Between steps (untimed) the files are removed and the file systems synced,
so no step pays for the previous one's dirty pages. The ack is seen at once
through a keyspace notification on jobs:data (no polling loop competing
for the CPU). One untimed warm-up (curl and ours) comes first; ours is
compared byte for byte with curl's.

Concurrent case: --concurrent jobs (4) of --concurrent-size bytes (256 MiB)
each, pushed together to a daemon with that many workers, against one
`curl --parallel` of the same URLs (durable: + fsync of every file, in
parallel threads, and of the directory; plain), and as many dd conv=fsync
processes at once.

Memory: while ours runs, a thread polls every --sample-ms (20 ms) the
master's children (the workers) and their descendants (the download
processes) in /proc and keeps the largest VmHWM of each kind. VmHWM is the
process's own peak RSS so far, so what a poll misses is only growth in the
last interval of a process's life (the commit runs in the worker, whose
VmHWM is read again after the download).

Targets (docs/performance.md): ours >= 0.90 of durable (both cases); peak
RSS of a worker and of a download process < 16 MiB. Rates are the medians
over the rounds; "ratio" is median(ours)/median(anchor), and the median of
the per-round ratios (each round's steps ran back to back) is shown too.
Exit status 1 when a target is missed or a download failed.

Options: --size, --rounds, --concurrent (0 skips the case),
--concurrent-size, --sample-ms. Environment: DJINN_CONSUMER (binary,
default ./djinn-consumer), BENCH_DOWNLOAD_BYTES and BENCH_ROUNDS (defaults
of --size and --rounds), TMPDIR (where the servers, store and files go).
Only 127.0.0.1 is contacted; everything started is stopped and the
directory removed. As root, PostgreSQL runs as the unprivileged user
djinn-test (created when missing, as the tests do).
"""
import argparse, json, os, resource, select, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (Redis, Servers, child_pids, cpu_seconds, envelope, loadavg,  # noqa: E402
                      median, parse_size, resp, title)

BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))
MIB = 1 << 20
RATIO_TARGET = 0.90
RSS_TARGET_KB = 16 * 1024
STEPS = ["durable", "plain", "dd", "ours"]


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(paths):
    """fsync of every file (in parallel threads when several), then of
    their directory."""
    if len(paths) == 1:
        fsync_path(paths[0])
    else:
        ts = [threading.Thread(target=fsync_path, args=(p,)) for p in paths]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    fsync_path(os.path.dirname(paths[0]))


class Sampler(threading.Thread):
    """Largest VmHWM (kB) of the master's children (workers) and of their
    descendants (download processes), polled every interval seconds."""

    def __init__(self, master, interval, peaks):
        threading.Thread.__init__(self, daemon=True)
        self.master, self.interval, self.peaks = master, interval, peaks
        self.done = threading.Event()

    @staticmethod
    def hwm(pid):
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sample(self):
        p = self.peaks
        p["samples"] += 1
        for w in child_pids(self.master):
            p["worker"] = max(p["worker"], self.hwm(w))
            t = title(w)
            if t.endswith("%"):
                p["titles"].add(t)
            todo = child_pids(w)
            while todo:
                c = todo.pop()
                h = self.hwm(c)
                if h:
                    p["child"] = max(p["child"], h)
                    p["children"].add(c)
                todo.extend(child_pids(c))

    def run(self):
        self.sample()
        while not self.done.wait(self.interval):
            self.sample()
        self.sample()

    def stop(self):
        self.done.set()
        self.join()


def new_peaks():
    return {"worker": 0, "child": 0, "children": set(), "samples": 0, "titles": set()}


class Bench(Servers):
    def __init__(self, args):
        Servers.__init__(self, "djinn-dlbench.")
        self.args = args
        self.images = 0

    # --- anchors -----------------------------------------------------------

    def files(self, n):
        return [os.path.join(self.tmp, "anchor%d.out" % i) for i in range(n)]

    def check_sizes(self, paths, size, what):
        for p in paths:
            got = os.path.getsize(p)
            if got != size:
                raise SystemExit("bench: %s wrote %d bytes to %s, not %d" % (what, got, p, size))

    def settle(self, paths):
        """Untimed: remove the outputs and sync, so the next step starts
        with no dirty pages of this one."""
        for p in paths:
            if os.path.exists(p):
                os.remove(p)
        os.sync()

    def run_curl(self, url, n, size, durable, keep=False):
        outs = self.files(n)
        cmd = ["curl", "-sS", "--no-progress-meter", "--fail", "--noproxy", "*"]
        if n > 1:
            cmd += ["--parallel", "--parallel-max", str(n)]
        for o in outs:
            cmd += ["-o", o, url]
        c0 = children_cpu()
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        if durable:
            fsync_all(outs)
        took = time.monotonic() - t0
        cpu = children_cpu() - c0
        self.check_sizes(outs, size, "curl")
        if not keep:
            self.settle(outs)
        return took, cpu

    def run_dd(self, n, size):
        outs = self.files(n)
        c0 = children_cpu()
        t0 = time.monotonic()
        ps = [subprocess.Popen(["dd", "if=/dev/zero", "of=" + o, "bs=1M", "count=%d" % (size // MIB),
                                "conv=fsync", "status=none"]) for o in outs]
        for p in ps:
            if p.wait() != 0:
                raise SystemExit("bench: dd exited with %d" % p.returncode)
        took = time.monotonic() - t0
        cpu = children_cpu() - c0
        self.check_sizes(outs, size, "dd")
        self.settle(outs)
        return took, cpu

    # --- ours ----------------------------------------------------------------

    def watch_acks(self):
        """A second connection subscribed to jobs:data's keyspace events:
        the worker's ack (HDEL) wakes us at once."""
        self.redis.cmd("CONFIG", "SET", "notify-keyspace-events", "Kh")
        self.watch = Redis(self.redis_port)
        self.watch.cmd("SUBSCRIBE", "__keyspace@0__:jobs:data")

    def wait_acked(self, jids, deadline):
        left = set(jids)
        while True:
            if not self.watch.buf:
                r, _, _ = select.select([self.watch.sock], [], [], 0.5)
                if not r:
                    if time.monotonic() > deadline or self.consumer.poll() is not None:
                        raise SystemExit("bench: download(s) did not finish; see " + self.log)
                    continue
            self.watch._read()  # ["message", channel, event]
            now = time.monotonic()
            left = {j for j in left if self.redis.cmd("HEXISTS", "jobs:data", j) == 1}
            if not left:
                return now

    def run_ours(self, url, n, size, workers, peaks, keep=False):
        jobs, paths = [], []
        rows = []
        for _ in range(n):
            self.images += 1
            h = "bench%d" % self.images
            image = self.sql("djinn", "INSERT INTO images (user_id, author_id, driver, hash, name) "
                                      "VALUES (1, 1, 'qemu', '%s', 'bench') RETURNING id" % h)
            dl = self.sql("djinn", "INSERT INTO image_downloads (image_id, source) VALUES (%s, '%s') "
                                   "RETURNING id" % (image, url))
            jid = "bench-%d-%s" % (self.images, os.urandom(4).hex())
            payload = json.dumps({"job": "download_job", "id": int(dl), "image_id": int(image),
                                  "source": url}).encode()
            rows.append(dl)
            paths.append(os.path.join(self.store, "1", "qemu", h))
            jobs.append((jid, resp("HSETNX", "jobs:data", jid, envelope(jid, payload)) +
                        resp("RPUSH", "jobs:active", jid)))
        data = b"".join(j[1] for j in jobs) + resp("DEL", "jobs:signal") + resp("LPUSH", "jobs:signal", 1)
        cpu0 = sum(sum(cpu_seconds(w)) for w in workers)
        sampler = Sampler(self.consumer.pid, self.args.sample_ms / 1000.0, peaks)
        sampler.start()
        t0 = time.monotonic()
        self.redis.send_ints(data, 2 * n + 2)
        t1 = self.wait_acked([j[0] for j in jobs], t0 + 3600)
        sampler.stop()
        try:
            cpu = sum(sum(cpu_seconds(w)) for w in workers) - cpu0
        except OSError:
            raise SystemExit("bench: a worker died; see " + self.log)
        for dl in rows:
            err = self.sql("djinn", "SELECT coalesce(error, 'NULL') || ' ' || (finished_at IS NOT NULL) "
                                    "FROM image_downloads WHERE id = %s" % dl)
            if err != "NULL true":
                raise SystemExit("bench: download failed: " + err)
        self.check_sizes(paths, size, "djinn-consumer")
        if not keep:
            self.settle(paths)
        return t1 - t0, cpu, paths

    # --- cases -----------------------------------------------------------------

    def run_case(self, name, n, size):
        """n downloads of size bytes at once, each step every round; returns
        {step: [(seconds, cpu)]} and the memory peaks."""
        url = "http://127.0.0.1:%d/big/%d" % (self.http_port, size)
        workers = self.start_consumer(BIN, workers=n)
        peaks = new_peaks()
        # Warm-up, untimed: the server's and daemon's first transfer; the
        # content check.
        self.run_curl(url, 1, size, False, keep=True)
        _, _, paths = self.run_ours(url, n, size, workers, peaks, keep=True)
        ref = self.files(1)[0]
        for p in paths:
            if subprocess.run(["cmp", "-s", p, ref]).returncode != 0:
                raise SystemExit("bench: the stored image %s differs from curl's download" % p)
        self.settle(paths + [ref])
        res = {s: [] for s in STEPS}
        total = n * size
        print()
        print("%s: %d x %d bytes (%s), %d worker(s), %d rounds; load %s"
              % (name, n, size, url, n, self.args.rounds, loadavg()))
        print("%5s  %-8s %8s %8s %7s" % ("round", "step", "seconds", "MiB/s", "CPU s"))
        for r in range(self.args.rounds):
            k = r % len(STEPS)
            for step in STEPS[k:] + STEPS[:k]:
                if step == "durable":
                    took, cpu = self.run_curl(url, n, size, True)
                elif step == "plain":
                    took, cpu = self.run_curl(url, n, size, False)
                elif step == "dd":
                    took, cpu = self.run_dd(n, size)
                else:
                    took, cpu, _ = self.run_ours(url, n, size, workers, peaks)
                res[step].append((took, cpu))
                print("%5d  %-8s %8.3f %8.0f %7.2f" % (r + 1, step, took, total / took / MIB, cpu))
                sys.stdout.flush()
        # The workers' own peak, commit included (they are still running).
        for w in workers:
            peaks["worker"] = max(peaks["worker"], Sampler.hwm(w))
        self.stop_consumer()
        return res, peaks

    def report_case(self, name, n, size, res, peaks):
        total = n * size
        rate = {s: median([total / t for t, _ in res[s]]) for s in STEPS}
        print("%s, medians over %d rounds (MiB/s; per-round values in order of rounds):"
              % (name, len(res["ours"])))
        label = {"durable": "curl -o + fsync (durable)", "plain": "curl -o (page cache only)",
                 "dd": "dd conv=fsync (disk limit)", "ours": "djinn-consumer, push to ack"}
        for s in STEPS:
            print("  %-28s %6.0f   [%s]  CPU %.2f s" % (
                label[s], rate[s] / MIB, ", ".join("%.0f" % (total / t / MIB) for t, _ in res[s]),
                median([c for _, c in res[s]])))
        ratios = {}
        for s in ("durable", "plain", "dd"):
            per_round = [a[0] / o[0] for a, o in zip(res[s], res["ours"])]  # t_anchor / t_ours
            ratios[s] = rate["ours"] / rate[s]
            print("  ours/%-8s %.3f (median of per-round ratios %.3f; rounds %s)" % (
                s, ratios[s], median(per_round), ", ".join("%.2f" % x for x in per_round)))
        print("  peak RSS: worker VmHWM %.1f MiB, download process VmHWM %.1f MiB "
              "(%d download processes seen in %d samples)"
              % (peaks["worker"] / 1024, peaks["child"] / 1024, len(peaks["children"]), peaks["samples"]))
        if peaks["titles"]:
            shown = sorted(peaks["titles"], key=lambda t: int(t.rsplit(" ", 1)[1][:-1]))
            print("  worker titles: %s ... %s (%d distinct)" % (shown[0], shown[-1], len(shown)))
        return ratios

    def main(self):
        a = self.args
        if not os.access(BIN, os.X_OK):
            raise SystemExit("bench: build %s first (make)" % BIN)
        for s in [a.size] + ([a.concurrent_size] if a.concurrent else []):
            if s % MIB:
                raise SystemExit("bench: sizes must be whole MiB (dd bs=1M)")
        self.start_redis()
        self.start_pg()
        self.start_httpd()
        self.watch_acks()
        print("download benchmark: %s, %d CPUs, files in %s, load %s" % (BIN, os.cpu_count(), self.tmp, loadavg()))
        rows = []  # (target, value text, ok)
        single = "1 x %s" % human(a.size)
        res, peaks = self.run_case(single, 1, a.size)
        ratios = self.report_case(single, 1, a.size, res, peaks)
        rows.append(("ours/durable >= %.2f, %s" % (RATIO_TARGET, single), "%.3f" % ratios["durable"],
                     ratios["durable"] >= RATIO_TARGET))
        info = [("ours/plain, %s" % single, "%.3f" % ratios["plain"]),
                ("ours/dd, %s" % single, "%.3f" % ratios["dd"])]
        mem_ok = peaks["child"] > 0  # the sampler must have seen a download process
        rows.append(("worker peak RSS < 16 MiB, %s" % single, "%.1f MiB" % (peaks["worker"] / 1024),
                     peaks["worker"] < RSS_TARGET_KB))
        rows.append(("download process peak RSS < 16 MiB, %s" % single,
                     "%.1f MiB" % (peaks["child"] / 1024) if mem_ok else "not seen",
                     mem_ok and peaks["child"] < RSS_TARGET_KB))
        if a.concurrent:
            multi = "%d x %s" % (a.concurrent, human(a.concurrent_size))
            res, peaks = self.run_case(multi, a.concurrent, a.concurrent_size)
            ratios = self.report_case(multi, a.concurrent, a.concurrent_size, res, peaks)
            rows.append(("ours/durable >= %.2f, %s" % (RATIO_TARGET, multi), "%.3f" % ratios["durable"],
                         ratios["durable"] >= RATIO_TARGET))
            info += [("ours/plain, %s" % multi, "%.3f" % ratios["plain"]),
                     ("ours/dd, %s" % multi, "%.3f" % ratios["dd"])]
            rows.append(("peak RSS < 16 MiB (worker, download process), %s" % multi,
                         "%.1f, %.1f MiB" % (peaks["worker"] / 1024, peaks["child"] / 1024),
                         max(peaks["worker"], peaks["child"]) < RSS_TARGET_KB))
        print()
        print("summary (load %s):" % loadavg())
        width = max(len(r[0]) for r in rows + info)
        for target, value, ok in rows:
            print("  %-*s  %12s  %s" % (width, target, value, "PASS" if ok else "FAIL"))
        for target, value in info:
            print("  %-*s  %12s" % (width, target, value))
        return 0 if all(r[2] for r in rows) else 1


def human(n):
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % k == 0:
            return "%d %s" % (n // k, unit)
    return "%d bytes" % n


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=parse_size(os.environ.get("BENCH_DOWNLOAD_BYTES", "1G")),
                   help="image size of the single case (1G; suffixes k, M, G)")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "5")))
    p.add_argument("--concurrent", type=int, default=4, help="jobs (and workers) of the concurrent case; 0: none")
    p.add_argument("--concurrent-size", type=parse_size, default=parse_size("256M"))
    p.add_argument("--sample-ms", type=float, default=20, help="memory polling interval")
    return p.parse_args()


if __name__ == "__main__":
    b = Bench(parse_args())
    try:
        rc = b.main()
    finally:
        b.cleanup()
    sys.exit(rc)
