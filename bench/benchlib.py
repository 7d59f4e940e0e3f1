"""Helpers shared by the benchmarks (loopback only)."""
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
HTTPD = os.path.join(ROOT, "tests", "harness", "httpd.py")
PG_USER = "djinn-test"


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def envelope(job_id, data, attempt=0):
    """A curlyq job envelope as vmihailenco/msgpack v4 writes it: fixmap(3)
    ID str8, Data bin8/bin16, Attempt int64 (d3)."""
    jid = job_id.encode()
    body = b"\xc4" + bytes([len(data)]) if len(data) < 256 else b"\xc5" + struct.pack(">H", len(data))
    return (b"\x83\xa2ID\xd9" + bytes([len(jid)]) + jid + b"\xa4Data" + body + data +
            b"\xa7Attempt\xd3" + struct.pack(">q", attempt))


def children(pid):
    """Live children of pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return out


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out waiting for " + what)
        time.sleep(0.02)


def proc_status(pid, key):
    """A kB field (VmRSS, VmHWM, ...) of /proc/<pid>/status; 0 when gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """(own, reaped children's) user + system CPU seconds of pid, from
    /proc/<pid>/stat (utime + stime, cutime + cstime)."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    fields = st[st.rindex(")") + 2:].split()
    hz = os.sysconf("SC_CLK_TCK")
    # fields[0] is field 3 (state): utime is field 14, cstime field 17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / hz, (cutime + cstime) / hz


def title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def resp(*args):
    """One command in RESP."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Redis:
    """Just enough RESP over one socket to poll without spawning redis-cli."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def cmd(self, *args):
        self.sock.sendall(resp(*args))
        return self._read()

    def send_ints(self, data, count):
        """Sends data, count commands already in RESP whose replies are
        all integers (HSETNX, RPUSH, DEL, LPUSH, ...), at once, and reads
        the count replies without parsing them one by one."""
        self.sock.sendall(data)
        while self.buf.count(b"\r\n") < count:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("redis closed the connection")
            self.buf += chunk
        if b"-" in self.buf:  # an error reply; integer replies hold no "-" here
            raise SystemExit("redis: " + self.buf[self.buf.index(b"-"):].split(b"\r\n")[0].decode())
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("redis closed the connection")
            self.buf += chunk
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


class Servers:
    """A private redis-server, PostgreSQL (the Djinn tables and the
    least-privilege role) and the test HTTP server (tests/harness/httpd.py)
    on free loopback ports in a temporary directory, and djinn-consumer
    daemons started against them. As root, PostgreSQL runs as the
    unprivileged user djinn-test (created when missing, as the tests do).
    cleanup() stops everything and removes the directory.
    listen_also: one more address the servers listen on (the HTTP server
    on it alone), inside a private network namespace the caller made;
    clients: the CIDR PostgreSQL then takes passwords from."""

    def __init__(self, prefix, listen_also=None, clients=None):
        self.listen_also = listen_also
        self.clients = clients
        self.http_host = listen_also or "127.0.0.1"
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.pg_data = None
        self.pgbin = None
        self.as_pg = []
        self.consumer = None

    def start_redis(self):
        self.redis_port = free_port()
        also = [self.listen_also, "--protected-mode", "no"] if self.listen_also else []
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"] + also + ["--save", "",
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
            f.write("listen_addresses = '127.0.0.1%s'\nport = %d\nunix_socket_directories = '%s'\n"
                    "fsync = off\nsynchronous_commit = off\npassword_encryption = 'scram-sha-256'\n"
                    % ("," + self.listen_also if self.listen_also else "", self.pg_port, pgdir))
        with open(self.pg_data + "/pg_hba.conf", "w") as f:
            f.write("local all postgres trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
            if self.clients:
                f.write("host all all %s scram-sha-256\n" % self.clients)
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
             os.path.join(self.tmp, "requests.log"), "--ready-file", ready, "--bind", self.http_host]))
        wait_for(lambda: os.path.exists(ready), 10, "httpd.py")
        with open(ready) as f:
            self.http_port = int(f.read())

    def start_consumer(self, binary, workers=1, log_level="info"):
        """Starts binary with this many workers against the servers, the
        store in <tmp>/store; returns the pids of its workers once all of
        them are idle (self.consumer is the master's Popen)."""
        self.store = os.path.join(self.tmp, "store")
        os.makedirs(self.store, exist_ok=True)
        self.log = os.path.join(self.tmp, "consumer.log")
        conf = os.path.join(self.tmp, "consumer.conf")
        with open(conf, "w") as f:
            f.write('log = { level = "%s"; file = "%s"; };\n' % (log_level, self.log))
            f.write("workers = %d;\nattempts = 1;\n" % workers)
            f.write('database = { addr = "127.0.0.1:%d"; name = "djinn"; username = "djinn_consumer"; '
                    'password = "%s"; };\n' % (self.pg_port, self.pg_password))
            f.write('redis = { addr = "127.0.0.1:%d"; };\n' % self.redis_port)
            f.write('store = { images = { type = "file"; path = "%s"; }; };\n' % self.store)
            f.write("download = { timeout = 3600; allow_private = true; };\n")
        self.consumer = subprocess.Popen([binary, "-config", conf])
        self.procs.append(self.consumer)
        found = []

        def idle():
            found[:] = [c for c in children(self.consumer.pid)
                        if title(c).startswith("djinn-consumer: worker ") and title(c).endswith(" idle")]
            if self.consumer.poll() is not None:
                raise SystemExit("bench: %s exited with %d; see %s" % (binary, self.consumer.returncode, self.log))
            return len(found) == workers
        wait_for(idle, 20, "the consumer's %d worker(s) (see %s)" % (workers, self.log))
        return found

    def stop_consumer(self):
        """Graceful stop (SIGTERM) of the consumer started last; raises
        SystemExit unless it exits 0."""
        p, self.consumer = self.consumer, None
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.procs.remove(p)
        if p.returncode != 0:
            raise SystemExit("bench: djinn-consumer exited with %d; see %s" % (p.returncode, self.log))

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


def child_pids(pid):
    """Children of pid from /proc/<pid>/task/<tid>/children (one small read
    per thread, unlike children() which scans all of /proc); [] when gone."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def parse_size(text):
    """Bytes from "1073741824", "256M", "1G", "1GiB", "512k" (powers of 1024)."""
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(t[-1:], 1)
    n = int(t[:-1] if mult > 1 else t)
    if n <= 0:
        raise ValueError("size must be positive: " + text)
    return n * mult
