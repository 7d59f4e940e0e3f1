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
import json, os, pwd, shutil, signal, socket, struct, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import children, envelope, free_port  # noqa: E402

SIZE = int(os.environ.get("BENCH_DOWNLOAD_BYTES", str(1 << 30)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HTTPD = os.path.join(ROOT, "tests", "harness", "httpd.py")
PG_USER = "djinn-test"
MIB = 1 << 20




def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out waiting for " + what)
        time.sleep(0.02)


class Redis:
    """Just enough RESP over one socket to poll without spawning redis-cli."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise SystemExit("redis: " + rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise SystemExit("redis: bad reply %r" % line)




def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return 0


def title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""




def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


class Bench:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="djinn-dlbench.")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.pg_data = None
        self.pgbin = None
        self.as_pg = []
        self.consumer = None

    # --- servers ---------------------------------------------------------

    def start_redis(self):
        self.redis_port = free_port()
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.tmp], stdout=subprocess.DEVNULL))

        def up():
            try:
                self.redis = Redis(self.redis_port)
                return self.redis.cmd("PING") == "PONG"
            except OSError:
                return False
        wait_for(up, 10, "redis-server")

    def pg_bin(self):
        best = None
        for v in sorted(os.listdir("/usr/lib/postgresql"), key=lambda s: int(s) if s.isdigit() else 0):
            if os.path.exists("/usr/lib/postgresql/%s/bin/postgres" % v):
                best = "/usr/lib/postgresql/%s/bin" % v
        return os.environ.get("DJINN_PG_BIN") or best

    def start_pg(self):
        pgbin = self.pg_bin()
        if not pgbin:
            raise SystemExit("bench: PostgreSQL server binaries not found (make deps)")
        pgdir = os.path.join(self.tmp, "pg")
        os.mkdir(pgdir)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", PG_USER], check=True)
            pw = pwd.getpwnam(PG_USER)
            os.chown(pgdir, pw.pw_uid, pw.pw_gid)
            self.as_pg = ["runuser", "-u", PG_USER, "--"]
        self.pg_port = free_port()
        self.pg_sock = pgdir
        self.pg_data = os.path.join(pgdir, "data")
        self.pgbin = pgbin
        subprocess.run(self.as_pg + [pgbin + "/initdb", "-D", self.pg_data, "-U", "postgres", "-A", "trust",
                                     "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, cwd="/")
        with open(self.pg_data + "/postgresql.conf", "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "fsync = off\nsynchronous_commit = off\npassword_encryption = 'scram-sha-256'\n"
                    % (self.pg_port, pgdir))
        with open(self.pg_data + "/pg_hba.conf", "w") as f:
            f.write("local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        subprocess.run(self.as_pg + [pgbin + "/pg_ctl", "-D", self.pg_data, "-l", pgdir + "/postgres.log",
                                     "-w", "-t", "30", "start"], check=True, stdout=subprocess.DEVNULL, cwd="/")
        self.pg_password = "bench-" + os.urandom(8).hex()
        self.sql("postgres", "CREATE DATABASE djinn")
        self.sql("djinn", """
            CREATE TYPE driver_type AS ENUM ('ssh', 'qemu', 'docker', 'os');
            CREATE TABLE images (id SERIAL PRIMARY KEY, user_id INT NOT NULL, author_id INT NOT NULL,
              namespace_id INT NULL, driver driver_type NOT NULL, hash VARCHAR NOT NULL UNIQUE,
              name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT NOW());
            CREATE TABLE image_downloads (id SERIAL PRIMARY KEY,
              image_id INT NOT NULL REFERENCES images ON DELETE CASCADE, source VARCHAR NOT NULL,
              error VARCHAR NULL, created_at TIMESTAMP NOT NULL DEFAULT NOW(),
              started_at TIMESTAMP NULL, finished_at TIMESTAMP NULL);
            CREATE ROLE djinn_consumer LOGIN PASSWORD '%s';
            GRANT SELECT ON images TO djinn_consumer;
            GRANT SELECT, UPDATE ON image_downloads TO djinn_consumer;
            """ % self.pg_password)

    def sql(self, db, text):
        r = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", self.pg_sock,
                            "-p", str(self.pg_port), "-U", "postgres", "-d", db, "-c", text],
                           capture_output=True, text=True, cwd="/")
        if r.returncode != 0:
            raise SystemExit("bench: psql: " + r.stderr)
        return r.stdout.strip()

    def start_httpd(self):
        files = os.path.join(self.tmp, "files")
        os.mkdir(files)
        ready = os.path.join(self.tmp, "httpd.ready")
        self.procs.append(subprocess.Popen(
            [sys.executable, HTTPD, "--dir", files, "--port", "0", "--log",
             os.path.join(self.tmp, "requests.log"), "--ready-file", ready]))
        wait_for(lambda: os.path.exists(ready), 10, "httpd.py")
        with open(ready) as f:
            self.http_port = int(f.read())
        self.url = "http://127.0.0.1:%d/big/%d" % (self.http_port, SIZE)

    def start_consumer(self):
        self.store = os.path.join(self.tmp, "store")
        os.mkdir(self.store)
        self.log = os.path.join(self.tmp, "consumer.log")
        conf = os.path.join(self.tmp, "consumer.conf")
        with open(conf, "w") as f:
            f.write('log = { level = "info"; file = "%s"; };\n' % self.log)
            f.write("workers = 1;\nattempts = 1;\n")
            f.write('database = { addr = "127.0.0.1:%d"; name = "djinn"; username = "djinn_consumer"; '
                    'password = "%s"; };\n' % (self.pg_port, self.pg_password))
            f.write('redis = { addr = "127.0.0.1:%d"; };\n' % self.redis_port)
            f.write('store = { images = { type = "file"; path = "%s"; }; };\n' % self.store)
            f.write("download = { timeout = 3600; allow_private = true; };\n")
        self.consumer = subprocess.Popen([BIN, "-config", conf])
        self.procs.append(self.consumer)

        def worker():
            for c in children(self.consumer.pid):
                if "worker" in title(c) and "idle" in title(c):
                    self.worker = c
                    return True
            return False
        wait_for(worker, 20, "the consumer's worker (see %s)" % self.log)

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
        self.start_consumer()
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

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is not self.consumer else signal.SIGQUIT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.pg_data and os.path.exists(self.pg_data + "/postmaster.pid"):
            subprocess.run(self.as_pg + [self.pgbin + "/pg_ctl", "-D", self.pg_data, "-m", "immediate",
                                         "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd="/")
        shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    b = Bench()
    try:
        rc = b.main()
    finally:
        b.cleanup()
    sys.exit(rc)
