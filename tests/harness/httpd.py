#!/usr/bin/env python3
"""Test HTTP(S) server for djinn-consumer's integration tests.

Standard library only. Started by tests/harness/http_server.cc; binds
127.0.0.1 only (--bind: another address, inside a test's private network
namespace). Behaviour is selected by the URL path:

  /files/<name>                 the file, Content-Type application/x-qemu-disk
  /images/<name>                the same (wire-compatibility vectors); a name
                                containing "-auth" requires Basic djinn:s3cret
  /ctype/<type>/<name>          the file with that (url-encoded) content type;
                                type "-" sends no Content-Type at all
  /status/<code>                that status, a short text body
  /flaky/<n>/<key>/<name>       500 the first n times for key, then the file
  /trickle/<bytes_per_sec>/<name>  headers at once, then the body slowly;
                                stops as soon as the client goes away
  /redirect/<n>/<rest>          302 to /redirect/<n-1>/<rest>, ..., then /<rest>
  /redirect-to?url=<u>[&code=c] 302 (or c) to any URL (file://, loopback, ...)
  /auth/<user>/<pass>/<name>    the file, 401 unless Basic user:pass
  /nolength/<name>              the file, close-delimited (no Content-Length)
  /chunked/<name>               the file, Transfer-Encoding: chunked
  /big/<bytes>                  a generated body (see big_block) of that size,
                                streamed from memory; qcow2 magic first
  /slow-headers/<ms>/<rest>     waits ms before answering <rest>

Webhook receivers (any method; keys are [A-Za-z0-9_-][A-Za-z0-9_.-]*). Each
request is recorded, byte for byte as received (request line, header lines,
blank line, body), in hooks/<key>/<n>.request next to the request log
(n = 000001, 000002, ... per key), renamed into place as soon as the request
has arrived, before it is answered. The answer carries these headers, in this order, as written:
"x-custom-thing: a", "X-Repeated: one", "x-repeated: two",
"X-Spaced:   padded  ", "content-type: text/plain; charset=utf-8",
Content-Length, and for a 3xx "Location: /hook/<key>-moved"; no Date or
Server header.
  /hook/<key>                   200, body "thanks\n"
  /hook-status/<code>/<key>     that status, body "status <code>\n"
  /hook-flaky/<n>/<key>         500 the first n times for key, then 200
  /hook-slow/<ms>/<key>         waits ms, then 200; gives up as soon as the
                                client goes away

Query flags on any body route: nolength=1, chunked=1, ctype=<type>,
length=<n> (announce Content-Length n whatever the body really is).

Resume flags on the file routes (/files, /images, /ctype, /flaky, /auth,
...; any of them switches the file to the sender below, without them
nothing changes):
  ranges=1      answer "Range: bytes=N-" with 206 and Content-Range (416
                when N is past the end), honouring If-Range: a range is
                served only when If-Range (if sent) equals the current ETag
                (strong comparison) or Last-Modified; else 200 and all
  drop=<pct>    on the first request for this path (with its query), send
                the headers as usual but only the first pct% of the file's
                bytes, then close the connection (FIN after the data)
  etag=changing a new ETag on every request for this path ("...-1", "-2")
  etag=none     no ETag header; lastmod=none: no Last-Modified header
The sender sends a strong ETag made of the file's size and mtime and a
Last-Modified from its mtime. Each of its responses appends
"METHOD\tPATH\tSTATUS\tBODY_BYTES_SENT\n" to sent.log next to the request
log once its body is done (or cut).

Every request is appended to the request log as "METHOD\tPATH\tSTATUS\n"
when its status line is sent. The chosen port is written to --ready-file
once the socket listens. Exit status 3 with "port N is taken" when the fixed
port cannot be bound.
"""

import argparse
import base64
import email.utils
import http.server
import os
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

BLOCK = 1 << 20
E2E_USER, E2E_PASS = "djinn", "s3cret"


def qcow2_header():
    """The valid qcow2 v3 header of tests/harness/qcow2_image.h (112 bytes)."""
    c = 1 << 16
    return struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, 16, 64 << 20, 0,
                       1, 3 * c, c, 1, 0, 0, 0, 0, 0, 4, 104) + bytes(8)


def big_block():
    """1 MiB: byte i is (i*31+7) & 0xff, with a valid qcow2 header at 0.

    /big/<n> is this block repeated and cut at n bytes (so every MiB starts
    with the header). http_server.cc BigBody() builds the same bytes.
    """
    table = bytes((i * 31 + 7) & 0xFF for i in range(256))
    block = bytearray(table * (BLOCK // 256))
    header = qcow2_header()
    block[0:len(header)] = header
    return bytes(block)


BIG = memoryview(big_block())
HOOK_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}\Z")


class State:
    def __init__(self, root, log_path):
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.flaky = {}
        self.log = open(log_path, "a", buffering=1)
        self.hook_dir = os.path.join(os.path.dirname(os.path.abspath(log_path)), "hooks")
        self.hook_counts = {}
        self.sent_log = open(os.path.join(os.path.dirname(os.path.abspath(log_path)), "sent.log"),
                             "a", buffering=1)
        self.seen = set()
        self.etag_counts = {}

    def record(self, method, path, status):
        with self.lock:
            self.log.write("%s\t%s\t%s\n" % (method, path, status))
            self.log.flush()

    def record_hook(self, key, raw):
        """Stores one webhook request as hooks/<key>/<n>.request (atomically)."""
        with self.lock:
            d = os.path.join(self.hook_dir, key)
            os.makedirs(d, exist_ok=True)
            if key not in self.hook_counts:  # a restarted server goes on counting
                self.hook_counts[key] = sum(1 for e in os.listdir(d) if e.endswith(".request"))
            n = self.hook_counts[key] + 1
            self.hook_counts[key] = n
            path = os.path.join(d, "%06d.request" % n)
            with open(path + ".tmp", "wb") as f:
                f.write(raw)
            os.rename(path + ".tmp", path)

    def record_sent(self, method, path, status, sent):
        with self.lock:
            self.sent_log.write("%s\t%s\t%s\t%d\n" % (method, path, status, sent))
            self.sent_log.flush()

    def first_request(self, key):
        """True the first time key is asked for."""
        with self.lock:
            if key in self.seen:
                return False
            self.seen.add(key)
            return True

    def next_etag(self, key):
        with self.lock:
            n = self.etag_counts.get(key, 0) + 1
            self.etag_counts[key] = n
            return n

    def flaky_hit(self, key):
        with self.lock:
            n = self.flaky.get(key, 0)
            self.flaky[key] = n + 1
            return n


class _HeaderTee:
    """Reads like the handler's rfile and keeps the raw header lines."""

    def __init__(self, f):
        self.f = f
        self.lines = []

    def readline(self, *args):
        line = self.f.readline(*args)
        self.lines.append(line)
        return line


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "djinn-test-httpd/1"
    timeout = 60  # per socket operation; a stuck client does not pin a thread forever

    # --- plumbing -------------------------------------------------------

    def log_request(self, code="-", size="-"):
        if isinstance(code, http.HTTPStatus):
            code = code.value
        self.server.state.record(self.command, self.path, code)

    def log_message(self, fmt, *args):
        # errors only (log_request above handles the access log)
        sys.stderr.write("httpd: %s\n" % (fmt % args))

    def parse_request(self):
        # Keeps the header block as received, for the webhook log.
        real, tee = self.rfile, _HeaderTee(self.rfile)
        self.rfile = tee
        try:
            return super().parse_request()
        finally:
            self.rfile = real
            self.raw_headers = b"".join(tee.lines)

    def do_GET(self):
        self.head_only = False
        self.route()

    def do_HEAD(self):
        self.head_only = True
        self.route()

    def do_POST(self):
        self.head_only = False
        # Drain the request body so that it is not read as the next request;
        # keep it for the webhook routes.
        keep = self.path.startswith("/hook")
        body = []
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, BLOCK))
            if not chunk:
                break
            if keep:
                body.append(chunk)
            n -= len(chunk)
        self.request_body = b"".join(body)
        self.route()

    def simple(self, code, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)

    def file_path(self, name):
        """The served file for a URL name, or None (missing or outside root)."""
        name = urllib.parse.unquote(name)
        path = os.path.realpath(os.path.join(self.server.state.root, name))
        if not path.startswith(self.server.state.root + os.sep) or not os.path.isfile(path):
            return None
        return path

    def client_gone(self):
        """After select() said readable: True when the peer closed or reset.

        A client sends nothing while it reads a response, so on TLS any
        readable byte (close_notify, then FIN) counts as going away; on plain
        TCP a peek tells EOF from a pipelined request.
        """
        try:
            data = socket.socket.recv(self.connection, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True
        return data == b"" or isinstance(self.connection, ssl.SSLSocket)

    # --- body senders ---------------------------------------------------

    def begin_body(self, length, ctype, query, code=200, extra=()):
        """Sends status and headers. Returns the writer mode."""
        q = query
        if "ctype" in q:
            ctype = q["ctype"]
        mode = "length"
        if q.get("nolength") == "1":
            mode = "close"
        if q.get("chunked") == "1":
            mode = "chunked"
        close = mode == "close"
        if "length" in q:
            length = int(q["length"])
            close = True  # the body may not match the announced length
        self.send_response(code)
        if ctype is not None and ctype != "-":
            self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        if mode == "length":
            self.send_header("Content-Length", str(length))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        if close:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        return mode

    def write_part(self, mode, data):
        if mode == "chunked":
            if not data:
                return
            self.wfile.write(b"%x\r\n" % len(data))
            self.wfile.write(data)
            self.wfile.write(b"\r\n")
        else:
            self.wfile.write(data)

    def end_body(self, mode):
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "close":
            self.close_connection = True

    def send_file(self, path, ctype, query, extra=()):
        size = os.path.getsize(path)
        mode = self.begin_body(size, ctype, query, extra=extra)
        if self.head_only:
            return
        with open(path, "rb") as f:
            if mode != "chunked" and not isinstance(self.connection, ssl.SSLSocket):
                # Zero-copy: the benchmark compares against this path.
                self.connection.sendfile(f)
            else:
                while True:
                    data = f.read(BLOCK)
                    if not data:
                        break
                    self.write_part(mode, data)
        self.end_body(mode)

    def send_file_resumable(self, path, ctype, query):
        """The file with the resume flags (ranges, drop, etag, lastmod)."""
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
        state = self.server.state
        base = "%x-%x" % (st.st_size, st.st_mtime_ns)
        etag = '"%s"' % base
        if query.get("etag") == "changing":
            etag = '"%s-%d"' % (base, state.next_etag(self.path))
        elif query.get("etag") == "none":
            etag = None
        lastmod = None if query.get("lastmod") == "none" else \
            email.utils.formatdate(st.st_mtime, usegmt=True)
        extra = []
        if etag is not None:
            extra.append(("ETag", etag))
        if lastmod is not None:
            extra.append(("Last-Modified", lastmod))
        code, start = 200, 0
        rng = self.headers.get("Range")
        if query.get("ranges") == "1":
            extra.append(("Accept-Ranges", "bytes"))
            m = re.fullmatch(r"bytes=(\d+)-", (rng or "").strip())
            cond = self.headers.get("If-Range")
            if cond is None:
                fresh = True
            elif cond.startswith('"'):
                fresh = etag is not None and cond == etag
            else:
                fresh = not cond.startswith("W/") and lastmod is not None and cond == lastmod
            if m and fresh:
                start = int(m.group(1))
                if start >= len(data):
                    return self.simple(416, "range not satisfiable\n",
                                       extra + [("Content-Range", "bytes */%d" % len(data))])
                code = 206
                extra.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
        body = memoryview(data)[start:]
        limit = len(body)
        cut = False
        if "drop" in query and state.first_request(self.path):
            limit = min(limit, max(0, int(len(data) * float(query["drop"]) / 100) - start))
            cut = True
        mode = self.begin_body(len(body), ctype, query, code=code, extra=extra)
        if self.head_only:
            return
        sent = 0
        try:
            while sent < limit:
                n = min(limit - sent, 256 * 1024)
                self.write_part(mode, body[sent:sent + n])
                sent += n
            if cut:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.close_connection = True
            else:
                self.end_body(mode)
        finally:
            state.record_sent(self.command, self.path, code, sent)

    def send_big(self, size, query):
        mode = self.begin_body(size, "application/x-qemu-disk", query)
        if self.head_only:
            return
        left = size
        while left > 0:
            n = min(left, BLOCK)
            self.write_part(mode, BIG[:n])
            left -= n
        self.end_body(mode)

    def send_trickle(self, path, rate, query):
        with open(path, "rb") as f:
            data = f.read()
        mode = self.begin_body(len(data), "application/x-qemu-disk", query)
        if self.head_only:
            return
        rate = max(1, rate)
        tick = 0.05
        step = max(1, int(rate * tick))
        pos = 0
        while pos < len(data):
            part = data[pos:pos + step]
            self.write_part(mode, part)
            pos += len(part)
            deadline = time.monotonic() + len(part) / rate
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # Sleep on the socket: wakes at once when the client closes.
                r, _, _ = select.select([self.connection], [], [], left)
                if r:
                    if self.client_gone():
                        self.close_connection = True
                        return
                    time.sleep(left)  # a pipelined request: just wait
        self.end_body(mode)

    # --- webhook receivers ----------------------------------------------

    def hook(self, head, rest):
        """The /hook* routes. False when the path is not one of them."""
        if head == "hook" and len(rest) == 1:
            key, code = rest[0], 200
        elif head in ("hook-status", "hook-flaky", "hook-slow") and len(rest) == 2:
            key, code = rest[1], 200
            arg = int(rest[0])
            if head == "hook-status":
                code = arg
        else:
            return False
        if not HOOK_KEY.match(key):
            self.simple(400, "bad hook key\n")
            return True
        raw = self.raw_requestline + self.raw_headers + getattr(self, "request_body", b"")
        self.server.state.record_hook(key, raw)
        if head == "hook-flaky" and self.server.state.flaky_hit("hook:" + key) < arg:
            code = 500
        if head == "hook-slow" and not self.wait_or_gone(arg / 1000.0):
            self.close_connection = True
            return True
        body = b"thanks\n" if head != "hook-status" else b"status %d\n" % code
        self.send_response_only(code)
        self.log_request(code)
        self.send_header("x-custom-thing", "a")
        self.send_header("X-Repeated", "one")
        self.send_header("x-repeated", "two")
        self.send_header("X-Spaced", "  padded  ")
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if 300 <= code < 400:
            self.send_header("Location", "/hook/%s-moved" % key)
        self.end_headers()
        if not self.head_only:
            self.wfile.write(body)
        return True

    def wait_or_gone(self, seconds):
        """Sleeps on the socket; False as soon as the client goes away."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            r, _, _ = select.select([self.connection], [], [], left)
            if r:
                if self.client_gone():
                    return False
                time.sleep(left)  # a pipelined request: just wait

    # --- routing --------------------------------------------------------

    def check_auth(self, user, password):
        want = "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        if self.headers.get("Authorization") == want:
            return True
        self.simple(401, "unauthorized\n", [("WWW-Authenticate", 'Basic realm="djinn-test"')])
        return False

    def route(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        parts = url.path.lstrip("/").split("/")
        head, rest = parts[0], parts[1:]
        disk = "application/x-qemu-disk"
        try:
            if head == "slow-headers" and len(rest) >= 2:
                time.sleep(int(rest[0]) / 1000.0)
                parts = rest[1:]
                head, rest = parts[0], parts[1:]

            if head.startswith("hook") and self.hook(head, rest):
                return
            if head in ("files", "images", "nolength", "chunked") and rest:
                if head == "images" and "-auth" in rest[-1]:
                    if not self.check_auth(E2E_USER, E2E_PASS):
                        return
                if head == "nolength":
                    query.setdefault("nolength", "1")
                if head == "chunked":
                    query.setdefault("chunked", "1")
                return self.serve_name("/".join(rest), disk, query)
            if head == "ctype" and len(rest) >= 2:
                return self.serve_name("/".join(rest[1:]), urllib.parse.unquote(rest[0]), query)
            if head == "status" and len(rest) == 1:
                code = int(rest[0])
                return self.simple(code, "status %d\n" % code)
            if head == "flaky" and len(rest) >= 3:
                n, key = int(rest[0]), rest[1]
                if self.server.state.flaky_hit(key) < n:
                    return self.simple(500, "flaky failure\n")
                return self.serve_name("/".join(rest[2:]), disk, query)
            if head == "trickle" and len(rest) >= 2:
                path = self.file_path("/".join(rest[1:]))
                if path is None:
                    return self.simple(404, "not found\n")
                return self.send_trickle(path, int(rest[0]), query)
            if head == "redirect" and len(rest) >= 2:
                n = int(rest[0])
                target = "/" + "/".join(rest[1:]) if n <= 1 else \
                    "/redirect/%d/%s" % (n - 1, "/".join(rest[1:]))
                if url.query:
                    target += "?" + url.query
                return self.simple(302, "redirect\n", [("Location", target)])
            if head == "redirect-to" and "url" in query:
                code = int(query.get("code", "302"))
                return self.simple(code, "redirect\n", [("Location", query["url"])])
            if head == "auth" and len(rest) >= 3:
                if not self.check_auth(urllib.parse.unquote(rest[0]),
                                       urllib.parse.unquote(rest[1])):
                    return
                return self.serve_name("/".join(rest[2:]), disk, query)
            if head == "big" and len(rest) == 1:
                return self.send_big(int(rest[0]), query)
        except ValueError:
            return self.simple(400, "bad request\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            self.close_connection = True
            return
        return self.simple(404, "not found\n")

    def serve_name(self, name, ctype, query):
        path = self.file_path(name)
        if path is None:
            return self.simple(404, "not found\n")
        if any(k in query for k in ("ranges", "drop", "etag", "lastmod")):
            return self.send_file_resumable(path, ctype, query)
        self.send_file(path, ctype, query)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    tls = None

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's own thread, so a slow
        # or broken client cannot stall accept().
        if self.tls is not None:
            try:
                request.settimeout(30)
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as e:
                sys.stderr.write("httpd: TLS handshake with %s failed: %s\n" % (client_address, e))
                request.close()
                return
        try:
            super().finish_request(request, client_address)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout):
            pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ssl.SSLError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log", required=True, help="request log")
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--bind", default="127.0.0.1",
                    help="address to listen on (a test's private namespace)")
    args = ap.parse_args()

    try:
        srv = Server((args.bind, args.port), Handler)
    except OSError as e:
        sys.stderr.write("httpd: port %d is taken (%s)\n" % (args.port, e.strerror))
        sys.exit(3)
    srv.state = State(args.dir, args.log)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        srv.tls = ctx
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, args.ready_file)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
