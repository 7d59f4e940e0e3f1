#!/usr/bin/env python3
"""Wake-up benchmark (make bench): enqueue -> done latency with idle workers.

Starts private redis-servers on free loopback ports and the real
djinn-consumer with 2 workers. For each producer style it pushes BENCH_LAT_JOBS
ping jobs one at a time, each only once every worker is idle and blocked in
its wait (INFO clients), after a random idle gap of 1-20 ms, and times from
the push to the moment the job's envelope is gone from jobs:data (polled on
one persistent connection). Producer styles:

  v0.4.0   HSETNX jobs:data + RPUSH jobs:active, nothing else: the Djinn
           server's curlyq
  signal   the same plus DEL + LPUSH jobs:signal: later curlyq versions

then the v0.4.0 style once more against a Redis whose BLMOVE is renamed away
(what Redis < 6.2 offers: the BRPOPLPUSH fallback).

It also counts, from INFO commandstats: Redis commands per second of one
idle worker, and wake-ups per job with 4 idle workers (takes per job minus
the one take that follows each finished job). Only 127.0.0.1 is contacted.
"""
import os, random, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import envelope, free_port, resp  # noqa: E402

JOBS = int(os.environ.get("BENCH_LAT_JOBS", "300"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))


class Redis:
    """A minimal RESP client on one persistent connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, *cmds):
        self.sock.sendall(b"".join(resp(*args) for args in cmds))
        return [self.reply() for _ in cmds]

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise SystemExit("bad reply %r" % line)

    def cmd(self, *args):
        return self.send(args)[0]

    def info(self, section):
        text = self.cmd("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


def start_redis(tmp, name, extra=()):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tmp] + list(extra),
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            r = Redis(port)
            if r.cmd("PING") == "PONG":
                return proc, port, r
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("redis-server (%s) did not start" % name)
        time.sleep(0.02)


def start_consumer(tmp, port, workers):
    conf = os.path.join(tmp, "lat-%d.conf" % port)
    with open(conf, "w") as f:
        f.write('log = { level = "warn"; file = "%s/lat.log"; };\n' % tmp)
        f.write("workers = %d;\n" % workers)
        f.write('database = { addr = "127.0.0.1:1"; name = "x"; username = "x"; };\n')
        f.write('redis = { addr = "127.0.0.1:%d"; };\n' % port)
        f.write('store = { images = { type = "file"; path = "%s/store"; }; };\n' % tmp)
    return subprocess.Popen([BIN, "-config", conf])


def wait_idle(r, workers, timeout=10):
    deadline = time.monotonic() + timeout
    while int(r.info("clients")["blocked_clients"]) != workers:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not go idle")
        time.sleep(0.0005)


def push(r, jid, with_signal):
    cmds = [("HSETNX", "jobs:data", jid, envelope(jid, b'{"job":"ping"}')),
            ("RPUSH", "jobs:active", jid)]
    if with_signal:
        cmds += [("DEL", "jobs:signal"), ("LPUSH", "jobs:signal", 1)]
    r.send(*cmds)


def latencies(r, workers, with_signal, jobs):
    out = []
    for i in range(jobs):
        wait_idle(r, workers)
        time.sleep(random.uniform(0.001, 0.020))
        jid = "lat-%s-%d" % ("sig" if with_signal else "v040", i)
        t0 = time.perf_counter()
        push(r, jid, with_signal)
        while r.cmd("HEXISTS", "jobs:data", jid) == 1:
            if time.perf_counter() - t0 > 10:
                raise SystemExit("job %s not done in 10 s" % jid)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def calls(r, cmd):
    stats = r.info("commandstats").get("cmdstat_" + cmd, "calls=0")
    return int(stats.split("calls=")[1].split(",")[0])


def run_style(tmp, label, with_signal, extra=()):
    proc_r, port, r = start_redis(tmp, label, extra)
    consumer = start_consumer(tmp, port, 2)
    try:
        wait_idle(r, 2, timeout=20)
        lat = latencies(r, 2, with_signal, JOBS)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
        proc_r.terminate()
        proc_r.wait(timeout=10)
    return lat


def idle_costs(tmp):
    proc_r, port, r = start_redis(tmp, "idle")
    consumer = start_consumer(tmp, port, 4)
    try:
        wait_idle(r, 4, timeout=20)
        # Idle: commands per second per worker over 5 s.
        r.cmd("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        time.sleep(5)
        stats = r.info("commandstats")
        elapsed = time.monotonic() - t0
        total = sum(int(v.split("calls=")[1].split(",")[0]) for k, v in stats.items()
                    if k.startswith("cmdstat_") and k not in ("cmdstat_config", "cmdstat_info"))
        # Idle workers send only their wait (BLMOVE); the master's duties
        # (heartbeat ZADD, scheduled and orphan scripts) are the rest.
        idle_per_worker = calls(r, "blmove") / elapsed / 4
        master_evalsha = calls(r, "evalsha") / elapsed
        # Wake-ups per job with 4 idle workers: every take a worker sends
        # (EVALSHA, less the master's share) is a wake-up, but one per job:
        # the ack-and-take after the job ran.
        jobs = 100
        r.cmd("CONFIG", "RESETSTAT")
        t1 = time.monotonic()
        latencies(r, 4, False, jobs)
        takes = calls(r, "evalsha") - master_evalsha * (time.monotonic() - t1)
        wakeups = takes / jobs - 1
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
        proc_r.terminate()
        proc_r.wait(timeout=10)
    return idle_per_worker, total / elapsed, wakeups


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit("build ./djinn-consumer first (make)")
    tmp = tempfile.mkdtemp(prefix="djinn-latbench.")
    try:
        print("wake-up benchmark: %d ping jobs per producer style, 2 idle workers, %d CPUs"
              % (JOBS, os.cpu_count()))
        print("%-34s %10s %10s %10s" % ("producer", "p50 ms", "p99 ms", "max ms"))
        rows = {}
        for label, sig, extra in (("v0.4.0 (HSETNX+RPUSH)", False, ()),
                                  ("signal (+DEL+LPUSH signal)", True, ()),
                                  ("v0.4.0, Redis without BLMOVE", False,
                                   ("--rename-command", "BLMOVE", ""))):
            lat = run_style(tmp, label, sig, extra)
            rows[label] = lat
            print("%-34s %10.2f %10.2f %10.2f" % (label, pct(lat, 50), pct(lat, 99), max(lat)))
            sys.stdout.flush()
        v040 = rows["v0.4.0 (HSETNX+RPUSH)"]
        sig = rows["signal (+DEL+LPUSH signal)"]
        print("ratio v0.4.0 / signal: p50 %.2f, p99 %.2f" %
              (pct(v040, 50) / pct(sig, 50), pct(v040, 99) / pct(sig, 99)))
        ok = all(pct(l, 50) < 1.0 and pct(l, 99) < 5.0 for l in (v040, sig))
        idle, total, wakeups = idle_costs(tmp)
        print("idle: %.2f Redis commands/s per idle worker (%.1f/s for a master and 4 idle workers)"
              % (idle, total))
        print("one job pushed to 4 idle workers wakes %.2f of them" % wakeups)
        print("target p50 < 1 ms and p99 < 5 ms for both producers: %s" % ("met" if ok else "MISSED"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
