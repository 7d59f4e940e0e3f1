#!/usr/bin/env python3
"""Small-image download benchmark (make bench): the cost of each download
beyond its bytes, e.g. the per-download confined process (issue 12).

Starts a private redis-server, PostgreSQL (the Djinn tables and the
least-privilege role) and the test HTTP server (tests/harness/httpd.py) on
free loopback ports in a temporary directory (benchlib.Servers, as
download_bench.py). Each measurement ("batch") inserts N images and
image_downloads rows, starts djinn-consumer with W workers, waits until
they are idle, pushes N download_job jobs for
http://127.0.0.1:<port>/big/65536 (a 64 KiB body that begins with a valid
qcow2 v3 header, tests/harness/qcow2_image.h) at once, as curlyq does
(HSETNX jobs:data + RPUSH jobs:active, pipelined), and times from the push
until jobs:data is empty (every job acked). Every row must then be
finished without error and every image stored (64 KiB each); the store
and the tables are emptied before the next batch. It also reads the
workers' CPU time (utime + stime of the worker and of the download
processes it reaped, /proc/<pid>/stat) over the batch.
Scenarios: downloads with 1 and with 2 workers, and a ping drain (P ping
jobs, 2 workers, same push and timing; pings fork nothing).

With DJINN_CONSUMER_BASELINE set, each scenario runs with both binaries
back to back in every round, the order alternating between rounds (base,
new; new, base; ...), against the same servers; it prints the ratio
new/base of the rates and the per-job difference 1/new - 1/base, in
microseconds, for the whole consumer and per worker (W x that). One
untimed warm-up batch per binary (1 worker) comes first.

Only 127.0.0.1 is contacted; everything started is stopped and the
directory removed. Exit status 1 when a download failed.

Environment: DJINN_CONSUMER (binary, default ./djinn-consumer),
DJINN_CONSUMER_BASELINE (a second binary to compare with, optional),
BENCH_DOWNLOADS (N, default 2000), BENCH_PINGS (P, default 20000),
BENCH_SMALL_ROUNDS (default 2), BENCH_WARMUP (downloads, default 200; 0:
none), TMPDIR (where the store goes). As root, PostgreSQL runs as the
unprivileged user djinn-test.
"""
import json, os, shutil, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Servers, cpu_seconds, envelope, resp  # noqa: E402

SIZE = 64 << 10
N = int(os.environ.get("BENCH_DOWNLOADS", "2000"))
PINGS = int(os.environ.get("BENCH_PINGS", "20000"))
ROUNDS = int(os.environ.get("BENCH_SMALL_ROUNDS", "2"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "200"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))
BASE = os.environ.get("DJINN_CONSUMER_BASELINE")
BASE = os.path.abspath(BASE) if BASE else None

SCENARIOS = [("downloads, 1 worker", "download", 1),
             ("downloads, 2 workers", "download", 2),
             ("pings, 2 workers", "ping", 2)]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Bench(Servers):
    def __init__(self):
        Servers.__init__(self, "djinn-smallbench.")
        self.batches = 0

    def prepare_downloads(self, n, tag):
        """n images and image_downloads rows; the jobs' RESP bytes."""
        self.sql("djinn", "TRUNCATE images, image_downloads")
        rows = self.sql("djinn", """
            WITH i AS (INSERT INTO images (user_id, author_id, driver, hash, name)
                       SELECT 1, 1, 'qemu', '%s-' || g, 'bench' FROM generate_series(1, %d) g RETURNING id)
            INSERT INTO image_downloads (image_id, source) SELECT id, '%s' FROM i RETURNING id, image_id
            """ % (tag, n, self.url)).split()
        if len(rows) != n:
            raise SystemExit("bench: inserted %d rows, not %d" % (len(rows), n))
        out = bytearray()
        for row in rows:
            dl, image = (int(x) for x in row.split("|"))
            jid = "%s-%d" % (tag, dl)
            payload = json.dumps({"job": "download_job", "id": dl, "image_id": image,
                                  "source": self.url}).encode()
            out += resp("HSETNX", "jobs:data", jid, envelope(jid, payload))
            out += resp("RPUSH", "jobs:active", jid)
        return bytes(out)

    def check_downloads(self, n):
        r = self.sql("djinn", "SELECT count(*) FILTER (WHERE error IS NULL AND finished_at IS NOT NULL) "
                              "|| ' ' || count(*) || ' ' || coalesce(min(error), '') FROM image_downloads")
        ok, total, err = (r.split(" ", 2) + [""])[:3]
        if int(ok) != n or int(total) != n:
            raise SystemExit("bench: %s of %s downloads finished without error; first error: %s; see %s"
                             % (ok, total, err, self.log))
        d = os.path.join(self.store, "1", "qemu")
        names = os.listdir(d)
        stored = [x for x in names if not x.startswith(".")]
        if len(stored) != n:
            raise SystemExit("bench: %d images stored, not %d (%s)" % (len(stored), n, d))
        for x in stored:
            if os.path.getsize(os.path.join(d, x)) != SIZE:
                raise SystemExit("bench: %s/%s has %d bytes" % (d, x, os.path.getsize(os.path.join(d, x))))
        shutil.rmtree(os.path.join(self.store, "1"))

    def prepare_pings(self, n, tag):
        out = bytearray()
        payload = b'{"job":"ping"}'
        for i in range(n):
            jid = "%s-%d" % (tag, i)
            out += resp("HSETNX", "jobs:data", jid, envelope(jid, payload))
            out += resp("RPUSH", "jobs:active", jid)
        return bytes(out)

    def batch(self, binary, kind, workers, n):
        """One timed batch: (jobs/s, worker CPU seconds per job)."""
        self.batches += 1
        tag = "b%d" % self.batches
        data = (self.prepare_downloads if kind == "download" else self.prepare_pings)(n, tag)
        data += resp("DEL", "jobs:signal") + resp("LPUSH", "jobs:signal", 1)
        pids = self.start_consumer(binary, workers)
        cpu0 = sum(sum(cpu_seconds(p)) for p in pids)
        t0 = time.monotonic()
        self.redis.send_ints(data, 2 * n + 2)
        deadline = t0 + max(600, n / 5)
        while self.redis.cmd("HLEN", "jobs:data") > 0:
            if time.monotonic() > deadline or self.consumer.poll() is not None:
                raise SystemExit("bench: the batch did not finish; see " + self.log)
            time.sleep(0.002)
        took = time.monotonic() - t0
        try:
            cpu1 = sum(sum(cpu_seconds(p)) for p in pids)
        except OSError:
            raise SystemExit("bench: a worker died during the batch; see " + self.log)
        self.stop_consumer()
        dead = self.redis.cmd("ZCARD", "jobs:dead")
        if dead:
            raise SystemExit("bench: %d job(s) in the dead set; see %s" % (dead, self.log))
        if kind == "download":
            self.check_downloads(n)
        return n / took, (cpu1 - cpu0) / n

    def main(self):
        for b in [BIN] + ([BASE] if BASE else []):
            if not os.access(b, os.X_OK):
                raise SystemExit("bench: build %s first (make)" % b)
        self.start_redis()
        self.start_pg()
        self.start_httpd()
        self.url = "http://127.0.0.1:%d/big/%d" % (self.http_port, SIZE)
        bins = [("base", BASE), ("new", BIN)] if BASE else [("new", BIN)]
        print("small download benchmark: %d downloads of %s (%d bytes, qcow2 v3 header), %d pings, "
              "%d round(s), %d CPUs, store in %s" % (N, self.url, SIZE, PINGS, ROUNDS, os.cpu_count(), self.tmp))
        for label, b in bins:
            print("%-5s %s" % (label + ":", b))
        print("load average at start: %s" % loadavg())
        if WARMUP > 0:
            for label, b in bins:
                self.batch(b, "download", 1, WARMUP)
        rates = {}  # (scenario, label) -> [(rate, cpu per job)]
        print("%-22s %5s %5s %10s %18s" % ("scenario", "round", "bin", "jobs/s", "worker CPU us/job"))
        for r in range(ROUNDS):
            order = bins if r % 2 == 0 else bins[::-1]
            for name, kind, workers in SCENARIOS:
                for label, b in order:
                    rate, cpu = self.batch(b, kind, workers, N if kind == "download" else PINGS)
                    rates.setdefault((name, label), []).append((rate, cpu))
                    print("%-22s %5d %5s %10.1f %18.0f" % (name, r + 1, label, rate, cpu * 1e6))
                    sys.stdout.flush()
        print("load average at end: %s" % loadavg())
        print()
        if not BASE:
            for name, kind, workers in SCENARIOS:
                xs = rates[(name, "new")]
                print("%-22s %10.1f jobs/s (mean of %d)" % (name, sum(x[0] for x in xs) / len(xs), len(xs)))
            return 0
        print("%-22s %10s %10s %9s %22s %14s %14s" % (
            "scenario", "base /s", "new /s", "new/base", "1/new-1/base us/job", "per worker us", "CPU us/job"))
        for name, kind, workers in SCENARIOS:
            old, new = rates[(name, "base")], rates[(name, "new")]
            ro = sum(x[0] for x in old) / len(old)
            rn = sum(x[0] for x in new) / len(new)
            co = sum(x[1] for x in old) / len(old)
            cn = sum(x[1] for x in new) / len(new)
            cost = (1 / rn - 1 / ro) * 1e6
            per_round = ", ".join("%.3f" % (n[0] / o[0]) for o, n in zip(old, new))
            print("%-22s %10.1f %10.1f %9.3f %22.1f %14.1f %7.0f -> %.0f   (rounds: %s)" % (
                name, ro, rn, rn / ro, cost, cost * workers, co * 1e6, cn * 1e6, per_round))
        return 0


if __name__ == "__main__":
    b = Bench()
    try:
        rc = b.main()
    finally:
        b.cleanup()
    sys.exit(rc)
