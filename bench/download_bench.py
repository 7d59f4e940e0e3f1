#!/usr/bin/env python3
"""download_job benchmark (make bench): throughput and worker memory.

Starts a private redis-server, PostgreSQL (the Djinn tables and the
least-privilege role) and the test HTTP server (tests/harness/httpd.py) on
free loopback ports in a temporary directory, and djinn-consumer with one
worker. Then, ROUNDS times each, alternating:
  - curl -o downloads /big/<SIZE> from that server into the same directory;
  - a download_job for the same URL goes through the consumer (pushed like
    curlyq does, timed from the push until the job is acked), which stores
    it under the image store: fsync'ed, renamed, row updated.
Prints both rates (median of the rounds), their ratio, the worker's peak
RSS (VmHWM from /proc/<worker>/status, and the largest VmRSS sampled
during the transfers) and the progress titles the worker showed. The first
consumer download is compared byte for byte with curl's. Only 127.0.0.1 is
contacted; everything started is stopped and the directory removed.

Targets (docs/performance.md): ratio >= 0.9, worker peak RSS < 16 MiB.
Exit status 1 when a target is missed or a download failed.

Environment: DJINN_CONSUMER (binary, default ./djinn-consumer),
BENCH_DOWNLOAD_BYTES (default 1073741824), BENCH_ROUNDS (default 5),
TMPDIR (where the store and curl's output go). As root, PostgreSQL runs as
the unprivileged user djinn-test (created when missing, as the tests do).
"""
import json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Servers, envelope, median, proc_status, title  # noqa: E402

SIZE = int(os.environ.get("BENCH_DOWNLOAD_BYTES", str(1 << 30)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))
MIB = 1 << 20


class Bench(Servers):
    def __init__(self):
        Servers.__init__(self, "djinn-dlbench.")

    # --- runs ------------------------------------------------------------

    def run_curl(self, n):
        out = os.path.join(self.tmp, "curl.out")
        t0 = time.monotonic()
        subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", out, self.url], check=True)
        took = time.monotonic() - t0
        if os.path.getsize(out) != SIZE:
            raise SystemExit("bench: curl got %d bytes" % os.path.getsize(out))
        if n > 0:
            os.remove(out)
        return SIZE / took

    def run_consumer(self, n):
        h = "bench%d" % n
        image = self.sql("djinn", "INSERT INTO images (user_id, author_id, driver, hash, name) "
                                  "VALUES (1, 1, 'qemu', '%s', 'bench') RETURNING id" % h)
        dl = self.sql("djinn", "INSERT INTO image_downloads (image_id, source) VALUES (%s, '%s') "
                               "RETURNING id" % (image, self.url))
        jid = "bench-%d-%s" % (n, os.urandom(4).hex())
        payload = json.dumps({"job": "download_job", "id": int(dl), "image_id": int(image),
                              "source": self.url}).encode()
        t0 = time.monotonic()
        self.redis.cmd("HSETNX", "jobs:data", jid, envelope(jid, payload))
        self.redis.cmd("RPUSH", "jobs:active", jid)
        self.redis.cmd("DEL", "jobs:signal")
        self.redis.cmd("LPUSH", "jobs:signal", "1")
        deadline = t0 + 3600
        while self.redis.cmd("HEXISTS", "jobs:data", jid) == 1:
            if time.monotonic() > deadline or self.consumer.poll() is not None:
                raise SystemExit("bench: download did not finish; see " + self.log)
            self.max_rss = max(self.max_rss, proc_status(self.worker, "VmRSS"))
            t = title(self.worker)
            if t.endswith("%"):
                self.titles.append(t)
            time.sleep(0.002)
        took = time.monotonic() - t0
        err = self.sql("djinn", "SELECT coalesce(error, 'NULL') || ' ' || (finished_at IS NOT NULL) "
                                "FROM image_downloads WHERE id = %s" % dl)
        if err != "NULL true":
            raise SystemExit("bench: download failed: " + err)
        path = os.path.join(self.store, "1", "qemu", h)
        if os.path.getsize(path) != SIZE:
            raise SystemExit("bench: stored %d bytes" % os.path.getsize(path))
        if n == 0:
            r = subprocess.run(["cmp", path, os.path.join(self.tmp, "curl.out")])
            if r.returncode != 0:
                raise SystemExit("bench: the stored image differs from curl's download")
            os.remove(os.path.join(self.tmp, "curl.out"))
        os.remove(path)
        return SIZE / took

    def main(self):
        if not os.access(BIN, os.X_OK):
            raise SystemExit("bench: build %s first (make)" % BIN)
        self.start_redis()
        self.start_pg()
        self.start_httpd()
        self.url = "http://127.0.0.1:%d/big/%d" % (self.http_port, SIZE)
        self.worker = self.start_consumer(BIN)[0]
        self.max_rss = 0
        self.titles = []
        curl, consumer = [], []
        for n in range(ROUNDS):
            curl.append(self.run_curl(n))
            consumer.append(self.run_consumer(n))
        hwm = proc_status(self.worker, "VmHWM")
        c, d = median(curl), median(consumer)
        ratio = d / c
        print("download_job benchmark: %d bytes from %s, %d rounds, store in %s"
              % (SIZE, self.url, ROUNDS, self.tmp))
        print("curl -o:         %s MiB/s (median %.0f)" % (", ".join("%.0f" % (x / MIB) for x in curl), c / MIB))
        print("djinn-consumer:  %s MiB/s (median %.0f), push to ack, fsync included"
              % (", ".join("%.0f" % (x / MIB) for x in consumer), d / MIB))
        print("ratio:           %.2f (target >= 0.90)" % ratio)
        print("worker peak RSS: VmHWM %.1f MiB, largest VmRSS sampled %.1f MiB (target < 16 MiB)"
              % (hwm / 1024, self.max_rss / 1024))
        if self.titles:
            shown = sorted(set(self.titles), key=lambda t: int(t.rsplit(" ", 1)[1][:-1]))
            print("worker titles:   %s ... %s (%d distinct)" % (shown[0], shown[-1], len(shown)))
        return 0 if ratio >= 0.9 and hwm < 16 * 1024 else 1


if __name__ == "__main__":
    b = Bench()
    try:
        rc = b.main()
    finally:
        b.cleanup()
    sys.exit(rc)
