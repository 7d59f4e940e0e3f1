#!/usr/bin/env python3
"""Queue benchmark (make bench): drain rate of ping jobs and worker memory.

Starts a private redis-server on a free loopback port, then for 1, 2 and 4
workers: writes N ping jobs the way curlyq's Go producer does (HSETNX
jobs:data, RPUSH jobs:active, DEL+LPUSH jobs:signal), starts the real
djinn-consumer, and times until jobs:data is empty. Measures each idle
worker's private memory (smaps_rollup Private_Clean + Private_Dirty), and
runs redis-benchmark against the same server in the same run (unpipelined
EVALSHA of a trivial script, 1 and 2 clients) so the ratio is comparable
across noisy machines. Only 127.0.0.1 is contacted.
"""
import os, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import children, envelope, free_port, resp  # noqa: E402

N = int(os.environ.get("BENCH_JOBS", "100000"))
BIN = os.path.abspath(os.environ.get("DJINN_CONSUMER", "./djinn-consumer"))








def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + [str(a) for a in args],
                          capture_output=True, text=True, check=True).stdout.strip()


def push_jobs(port, n):
    payload = b'{"job":"ping"}'
    buf = bytearray()
    for i in range(n):
        jid = "00000000-0000-4000-8000-%012d" % i
        buf += resp("HSETNX", "jobs:data", jid, envelope(jid, payload))
        buf += resp("RPUSH", "jobs:active", jid)
    buf += resp("DEL", "jobs:signal") + resp("LPUSH", "jobs:signal", 1)
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=bytes(buf),
                   capture_output=True, check=True)


def private_kib(pid):
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total




def drain(port, tmp, workers, addr=None):
    cli(port, "FLUSHALL")
    push_jobs(port, N)
    assert int(cli(port, "HLEN", "jobs:data")) == N
    conf = os.path.join(tmp, "bench.conf")
    store = os.path.join(tmp, "store")
    with open(conf, "w") as f:
        f.write('log = { level = "warn"; file = "%s/bench.log"; };\n' % tmp)
        f.write("workers = %d;\n" % workers)
        f.write('database = { addr = "127.0.0.1:1"; name = "x"; username = "x"; };\n')
        f.write('redis = { addr = "%s"; };\n' % (addr or "127.0.0.1:%d" % port))
        f.write('store = { images = { type = "file"; path = "%s"; }; };\n' % store)
    t0 = time.monotonic()
    proc = subprocess.Popen([BIN, "-config", conf])
    try:
        deadline = t0 + 300
        while int(cli(port, "HLEN", "jobs:data")) > 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("drain did not finish; see %s/bench.log" % tmp)
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        time.sleep(0.5)  # idle now: measure resting memory
        mem = [private_kib(p) for p in children(proc.pid)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    if proc.returncode != 0:
        raise SystemExit("djinn-consumer exited with %d" % proc.returncode)
    return N / elapsed, mem


def redis_benchmark(port, clients):
    sha = cli(port, "SCRIPT", "LOAD", "return 1")
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", "200000", "-c", str(clients),
                          "-q", "EVALSHA", sha, "0"], capture_output=True, text=True, check=True).stdout
    # "EVALSHA ...: 98039.22 requests per second, p50=..."
    for part in out.replace("\r", "\n").split("\n"):
        if "requests per second" in part:
            return float(part.split(":")[1].split()[0])
    raise SystemExit("cannot parse redis-benchmark output: " + out)


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit("build ./djinn-consumer first (make)")
    tmp = tempfile.mkdtemp(prefix="djinn-bench.")
    port = free_port()
    sock = os.path.join(tmp, "redis.sock")
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp, "--unixsocket", sock],
                             stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                if cli(port, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.02)
        rb1 = redis_benchmark(port, 1)
        rb2 = redis_benchmark(port, 2)
        print("queue benchmark: %d ping jobs, redis-server on 127.0.0.1:%d, %d CPUs"
              % (N, port, os.cpu_count()))
        print("redis-benchmark EVALSHA (unpipelined): %.0f/s with 1 client, %.0f/s with 2" % (rb1, rb2))
        print("%-8s %12s %16s %24s" % ("workers", "jobs/s", "ratio to rb(2)", "private KiB per idle worker"))
        for w in (1, 2, 4):
            rate, mem = drain(port, tmp, w)
            print("%-8d %12.0f %16.2f %24s" % (w, rate, rate / rb2, ",".join(str(m) for m in sorted(mem))))
            sys.stdout.flush()
        rate, mem = drain(port, tmp, 2, sock)
        print("%-8s %12.0f %16.2f %24s   (redis over its unix socket)"
              % ("2", rate, rate / rb2, ",".join(str(m) for m in sorted(mem))))
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
