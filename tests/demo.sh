#!/bin/sh
# make demo: the main job end to end, on throwaway local services.
#
# Starts a private redis-server and PostgreSQL on free loopback ports in a
# temporary directory, creates the Djinn tables and a least-privilege role,
# serves a small qcow2 image over loopback HTTP, starts djinn-consumer with
# two workers, enqueues a download_job exactly as the Djinn server does
# (curlyq keys, msgpack envelope), waits for the outcome, prints it, then
# stops everything it started and removes the directory (also on failure).
#
# Usage: tests/demo.sh [DAEMON_BINARY]     (default ./djinn-consumer)
# Run from the repository root, as root on Debian 12 after `make deps` and
# the build (as another user it runs PostgreSQL as that user). Rerunnable.
# Exit status 0 only when the image arrived intact and the row says so.
set -u

cd "$(dirname "$0")/.." || exit 1
BIN=$(readlink -f "${1:-./djinn-consumer}")
QUEUE="jobs"
DEMO_USER=djinn-demo
WAIT_JOB=60  # seconds for the download to finish

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'demo: FAILED: %s\n' "$*" >&2
  if [ -n "${TMP:-}" ] && [ -s "$TMP/consumer.log" ]; then
    printf -- '--- last lines of the consumer log (%s)\n' "$TMP/consumer.log" >&2
    tail -n 30 "$TMP/consumer.log" >&2
  fi
  exit 1
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
  wf_limit=$(($1 * 10)) wf_i=0
  shift
  until "$@"; do
    wf_i=$((wf_i + 1))
    [ "$wf_i" -ge "$wf_limit" ] && return 1
    sleep 0.1
  done
  return 0
}

# alive PID: running and not a zombie waiting for us to reap it.
alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }
consumer_gone() { ! alive "$CONSUMER_PID"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- preconditions -----------------------------------------------------

[ -x "$BIN" ] || die "$BIN: no such executable (run 'make' first)"
for tool in redis-server redis-cli psql python3 sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run 'make deps' as root)"
done
PGBIN=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/postgres" ] && PGBIN=$d   # the glob sorts; the last is the newest
done
[ -n "${DJINN_PG_BIN:-}" ] && PGBIN=$DJINN_PG_BIN
[ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql (run 'make deps' as root)"

# PostgreSQL refuses to run as root: as root, it runs as $DEMO_USER, and so
# do the workers (the master drops them to the config's user).
if [ "$(id -u)" = 0 ]; then
  if ! getent passwd "$DEMO_USER" >/dev/null; then
    say "creating system user $DEMO_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$DEMO_USER" ||
      die "useradd $DEMO_USER failed"
  fi
  as_pg() { (cd / && runuser -u "$DEMO_USER" -- "$@"); }
else
  DEMO_USER=""
  as_pg() { (cd / && "$@"); }
fi

# --- clean-up, on every exit -------------------------------------------

TMP=""
CONSUMER_PID="" REDIS_PID="" HTTP_PID=""
PG_STARTED=0
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ -n "$CONSUMER_PID" ]; then
    kill -s QUIT "$CONSUMER_PID" 2>/dev/null
    wait_for 10 consumer_gone || kill -s KILL "$CONSUMER_PID" 2>/dev/null
    wait "$CONSUMER_PID" 2>/dev/null
  fi
  if [ -n "$HTTP_PID" ]; then
    kill "$HTTP_PID" 2>/dev/null
    wait "$HTTP_PID" 2>/dev/null
  fi
  if [ "$PG_STARTED" = 1 ]; then
    as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/djinn-demo.XXXXXX") || die "mktemp failed"
chmod 0755 "$TMP"   # the workers' and PostgreSQL's user must reach into it
say "working in $TMP"

# --- redis ---------------------------------------------------------------

REDIS_PORT=$(free_port) || die "cannot find a free port"
say "starting redis on 127.0.0.1:$REDIS_PORT"
mkdir "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save '' \
  --appendonly no --daemonize no --logfile "$TMP/redis/redis.log" &
REDIS_PID=$!
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
redis_up() { [ "$(rcli PING 2>/dev/null)" = PONG ]; }
wait_for 10 redis_up || die "redis-server did not answer on port $REDIS_PORT: $(tail -n 5 "$TMP/redis/redis.log" 2>/dev/null)"

# --- postgresql ----------------------------------------------------------

PG_PORT=$(free_port) || die "cannot find a free port"
say "starting postgresql ($PGBIN) on 127.0.0.1:$PG_PORT${DEMO_USER:+ as $DEMO_USER}"
mkdir "$TMP/pg"
[ -n "$DEMO_USER" ] && chown "$DEMO_USER:" "$TMP/pg"
as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -U postgres -A trust -E UTF8 --locale=C \
  --no-sync >"$TMP/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$TMP/initdb.log")"
cat >>"$TMP/pg/data/postgresql.conf" <<EOF
# djinn demo
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP/pg'
fsync = off
password_encryption = 'scram-sha-256'
EOF
# The superuser over the unix socket only; the consumer with a password.
cat >"$TMP/pg/data/pg_hba.conf" <<EOF
local all postgres trust
host  all all 127.0.0.1/32 scram-sha-256
EOF
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/postgres.log" -w -t 30 start >/dev/null ||
  die "postgres did not start: $(tail -n 5 "$TMP/pg/postgres.log" 2>/dev/null)"
PG_STARTED=1
PG_PID=$(head -n 1 "$TMP/pg/data/postmaster.pid")

# psql_su DB SQL: runs SQL as the superuser; prints rows unaligned, '|'-separated.
psql_su() {
  PGCONNECT_TIMEOUT=5 psql -X -q -At -v ON_ERROR_STOP=1 -h "$TMP/pg" -p "$PG_PORT" \
    -U postgres -d "$1" -c "$2"
}

say "creating database djinn, the Djinn tables and the role djinn_consumer"
DB_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$DB_PASSWORD" >"$TMP/dbpass"
chmod 0600 "$TMP/dbpass"
psql_su postgres "CREATE DATABASE djinn" || die "CREATE DATABASE failed"
# The schema the tests use too, with the role, its password and the database
# filled in.
psql_su djinn "$(sed -e "s/@ROLE@/djinn_consumer/g" -e "s/@PASSWORD@/$DB_PASSWORD/g" \
  -e "s/@DB@/djinn/g" tests/data/djinn-schema.sql)" || die "creating the schema failed"
# The two webhook tables and their grants, as Djinn creates them.
psql_su djinn "$(cat tests/data/webhooks/schema.sql)" || die "creating the webhook tables failed"

# --- the image and its HTTP server ---------------------------------------

IMAGE_NAME=demo.qcow2
mkdir "$TMP/www"
# A valid, empty qcow2 v3 image of 64 MiB virtual size, laid out as
# qemu-img lays it out: header, refcount table, refcount block, L1 table,
# one 64 KiB cluster each.
python3 - "$TMP/www/$IMAGE_NAME" <<'EOF' || die "cannot write the qcow2 image"
import struct, sys
C = 1 << 16                       # cluster size (cluster_bits 16)
hdr = struct.pack(">4sIQIIQIIQQIIQQQQII",
    b"QFI\xfb", 3,                # magic, version
    0, 0,                         # backing file offset, size
    16, 64 << 20,                 # cluster_bits, virtual size
    0,                            # crypt_method
    1, 3 * C,                     # l1_size, l1_table_offset
    1 * C, 1,                     # refcount_table_offset, refcount_table_clusters
    0, 0,                         # nb_snapshots, snapshots_offset
    0, 0, 0,                      # incompatible, compatible, autoclear features
    4, 104)                       # refcount_order (16-bit), header_length
img = bytearray(4 * C)
img[0:len(hdr)] = hdr             # followed by the end-of-extensions marker (zeros)
struct.pack_into(">Q", img, 1 * C, 2 * C)        # refcount table -> block
for cluster in range(4):                          # 4 clusters in use
    struct.pack_into(">H", img, 2 * C + 2 * cluster, 1)
with open(sys.argv[1], "wb") as f:
    f.write(img)
EOF
IMAGE_SHA=$(sha256sum "$TMP/www/$IMAGE_NAME" | cut -d' ' -f1)
python3 tests/harness/httpd.py --dir "$TMP/www" --port 0 --log "$TMP/http-requests.log" \
  --ready-file "$TMP/http.port" 2>"$TMP/httpd.log" &
HTTP_PID=$!
wait_for 10 test -s "$TMP/http.port" || die "the HTTP server did not start: $(cat "$TMP/httpd.log")"
HTTP_PORT=$(cat "$TMP/http.port")
SOURCE="http://127.0.0.1:$HTTP_PORT/images/$IMAGE_NAME"
say "serving $IMAGE_NAME ($(stat -c %s "$TMP/www/$IMAGE_NAME") bytes, sha256 $IMAGE_SHA) at $SOURCE"

# --- the rows the Djinn server would have written ------------------------

HASH=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
IMAGE_ID=$(psql_su djinn "INSERT INTO images (user_id, author_id, namespace_id, driver, hash, name)
  VALUES (1, 1, 1, 'qemu', '$HASH', 'demo') RETURNING id" | head -n 1) || die "INSERT images failed"
# A webhook of namespace 1 that wants images events, at our HTTP server,
# with a secret sealed with the crypto block below (tests/data/webhooks
# cases.json, vector block32: the secret is "s3cret-hook").
HOOK_URL="http://127.0.0.1:$HTTP_PORT/hook/demo"
HOOK_ID=$(psql_su djinn "INSERT INTO namespace_webhooks (user_id, author_id, namespace_id,
  payload_url, secret, ssl, events) VALUES (1, 1, 1, '$HOOK_URL',
  decode('000102030405060708090a0bbf377eccde1c7d0ca5ffbbfa1ac49cde23e0211b830e3b945f3660', 'hex'),
  false, 512) RETURNING id" | head -n 1) || die "INSERT namespace_webhooks failed"
DOWNLOAD_ID=$(psql_su djinn "INSERT INTO image_downloads (image_id, source)
  VALUES ($IMAGE_ID, '$SOURCE') RETURNING id" | head -n 1) || die "INSERT image_downloads failed"
say "inserted images row $IMAGE_ID (user 1, namespace 1, driver qemu, hash $HASH), image_downloads row $DOWNLOAD_ID and namespace_webhooks row $HOOK_ID ($HOOK_URL)"

# --- the consumer ----------------------------------------------------------

STORE=$TMP/store
USER_LINE="# user: not root, workers keep our user"
[ -n "$DEMO_USER" ] && USER_LINE="user = \"$DEMO_USER\";  # workers drop to it"
cat >"$TMP/consumer.conf" <<EOF
# generated by tests/demo.sh
pidfile = "$TMP/consumer.pid";
log = { level = "info"; file = "$TMP/consumer.log"; };
workers = 2;
$USER_LINE
queue = "$QUEUE";
shutdown_timeout = 30;
database = {
  addr = "127.0.0.1:$PG_PORT";
  name = "djinn";
  username = "djinn_consumer";
  password_file = "$TMP/dbpass";
};
redis = { addr = "127.0.0.1:$REDIS_PORT"; };
store = { images = { type = "file"; path = "$STORE"; }; };
download = { timeout = 60; allow_private = true; };  # the server is on loopback
# Djinn's crypto block: webhook secrets are sealed with it.
crypto = { block = "0123456789abcdef0123456789abcdef"; salt = "pepper-salt"; };
webhooks = { allow_private = true; api_server = "https://djinn.example.com"; };
EOF
say "checking the configuration: $BIN -t -config $TMP/consumer.conf"
"$BIN" -t -config "$TMP/consumer.conf" || die "the generated configuration is invalid"

say "starting djinn-consumer with 2 workers"
"$BIN" -config "$TMP/consumer.conf" >"$TMP/consumer.out" 2>&1 &
CONSUMER_PID=$!
workers_idle() {
  n=0
  alive "$CONSUMER_PID" || return 0   # died: stop waiting
  for c in $(pgrep -P "$CONSUMER_PID"); do
    case "$(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null)" in
      *"worker "*" idle"*) n=$((n + 1)) ;;
    esac
  done
  [ "$n" -eq 2 ]
}
wait_for 20 workers_idle || die "the workers did not become idle within 20 s"
alive "$CONSUMER_PID" ||
  die "djinn-consumer exited at start: $(cat "$TMP/consumer.out")"
ps -o pid=,user=,args= -p "$CONSUMER_PID" --ppid "$CONSUMER_PID" | sed 's/^/    /'

# --- enqueue, as the Djinn server does -----------------------------------

PAYLOAD=$(printf '{"job":"download_job","id":%s,"image_id":%s,"source":"%s"}' \
  "$DOWNLOAD_ID" "$IMAGE_ID" "$SOURCE")
say "enqueueing $PAYLOAD"
# curlyq's push: HSETNX Q:data <id> <envelope>, RPUSH Q:active <id>, then
# DEL + LPUSH Q:signal to wake idle consumers; sent as one MULTI/EXEC over a
# raw RESP socket (the envelope is binary). Prints the job ID.
JOB_ID=$(python3 - "$REDIS_PORT" "$QUEUE" "$PAYLOAD" <<'EOF'
import socket, sys, uuid
port, queue, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()

def mp_str(s):
    b = s.encode()
    n = len(b)
    if n < 32: return bytes([0xa0 | n]) + b
    if n < 256: return b"\xd9" + bytes([n]) + b
    return b"\xda" + n.to_bytes(2, "big") + b

def mp_bin(b):
    n = len(b)
    if n < 256: return b"\xc4" + bytes([n]) + b
    if n < 65536: return b"\xc5" + n.to_bytes(2, "big") + b
    return b"\xc6" + n.to_bytes(4, "big") + b

job_id = str(uuid.uuid4())
# curlyq v0.4.0 (vmihailenco/msgpack v4): fixmap(3) ID str, Data bin,
# Attempt int64 (d3 + 8 bytes), in this order.
envelope = (b"\x83" + mp_str("ID") + mp_str(job_id) + mp_str("Data") + mp_bin(payload)
            + mp_str("Attempt") + b"\xd3" + bytes(8))

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

def read_reply(f):
    line = f.readline()
    if not line:
        raise SystemExit("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise SystemExit("redis error: " + rest.decode())
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    raise SystemExit("unexpected reply %r" % line)

q = queue
cmds = [resp("MULTI"),
        resp("HSETNX", q + ":data", job_id, envelope),
        resp("RPUSH", q + ":active", job_id),
        resp("DEL", q + ":signal"),
        resp("LPUSH", q + ":signal", "1"),
        resp("EXEC")]
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(b"".join(cmds))
    f = s.makefile("rb")
    replies = [read_reply(f) for _ in cmds]
result = replies[-1]
if not isinstance(result, list) or len(result) != 4 or result[0] != "1":
    raise SystemExit("push failed: EXEC returned %r" % (result,))
sys.stderr.write("    envelope (%d bytes): %s\n" % (len(envelope), envelope.hex(" ")))
print(job_id)
EOF
) || die "cannot enqueue the job"
say "pushed job $JOB_ID: HSETNX $QUEUE:data, RPUSH $QUEUE:active, DEL + LPUSH $QUEUE:signal"

# --- wait for the outcome --------------------------------------------------

row_finished() {
  [ "$(psql_su djinn "SELECT finished_at IS NOT NULL FROM image_downloads WHERE id = $DOWNLOAD_ID")" = t ]
}
job_gone() {  # acked (no data left) or dead
  [ "$(rcli HEXISTS "$QUEUE:data" "$JOB_ID")" = 0 ] || [ -n "$(rcli ZSCORE "$QUEUE:dead" "$JOB_ID")" ]
}
done_or_gone() { row_finished || job_gone; }
say "waiting up to ${WAIT_JOB}s for image_downloads row $DOWNLOAD_ID to finish"
START=$(date +%s)
wait_for "$WAIT_JOB" done_or_gone ||
  die "no outcome after ${WAIT_JOB}s: the row is not finished and job $JOB_ID is still queued"
# The handler writes the row before the worker acks: give a row that is not
# finished yet a moment after the job left the queue.
wait_for 3 row_finished || {
  if [ -n "$(rcli ZSCORE "$QUEUE:dead" "$JOB_ID")" ]; then
    die "job $JOB_ID went to the dead set ($QUEUE:dead) and row $DOWNLOAD_ID was not finished"
  fi
  die "job $JOB_ID left the queue but image_downloads row $DOWNLOAD_ID has no finished_at: the download_job handler did not record an outcome"
}
say "finished after $(($(date +%s) - START))s; the image_downloads row:"
psql_su djinn "SELECT 'id=' || id, 'image_id=' || image_id, 'source=' || source,
  'error=' || COALESCE(error, 'NULL'), 'created_at=' || created_at,
  'started_at=' || COALESCE(started_at::text, 'NULL'), 'finished_at=' || finished_at
  FROM image_downloads WHERE id = $DOWNLOAD_ID" | tr '|' '\n' | sed 's/^/    /'

ERROR=$(psql_su djinn "SELECT COALESCE(error, '<NULL>') FROM image_downloads WHERE id = $DOWNLOAD_ID")
[ "$ERROR" = "<NULL>" ] || die "the download failed: image_downloads.error = \"$ERROR\""

# --- the stored file ---------------------------------------------------------

STORED=$STORE/1/qemu/$HASH
[ -f "$STORED" ] || die "$STORED does not exist: $(find "$STORE" 2>/dev/null | tr '\n' ' ')"
STORED_SHA=$(sha256sum "$STORED" | cut -d' ' -f1)
say "stored file: $STORED ($(stat -c '%s bytes, owner %U:%G, mode %a' "$STORED"))"
printf '    sha256 %s (stored)\n    sha256 %s (served)\n' "$STORED_SHA" "$IMAGE_SHA"
[ "$STORED_SHA" = "$IMAGE_SHA" ] || die "the stored file differs from the served one"
[ "$(head -c 4 "$STORED" | od -An -tx1 | tr -d ' \n')" = 514649fb ] || die "the stored file lacks the qcow2 magic"
leftovers=$(find "$STORE" -name '.*.part')
[ -z "$leftovers" ] || die "temporary files left in the store: $leftovers"
if command -v qemu-img >/dev/null 2>&1; then
  qemu-img check -q "$STORED" || die "qemu-img check failed on $STORED"
  say "qemu-img check: ok"
fi

# --- the webhook --------------------------------------------------------------

delivered() {
  [ "$(psql_su djinn "SELECT count(*) FROM namespace_webhook_deliveries WHERE webhook_id = $HOOK_ID")" -ge 1 ]
}
say "waiting up to 20s for the images event at $HOOK_URL"
wait_for 20 delivered || die "no namespace_webhook_deliveries row for webhook $HOOK_ID after 20 s"
REQUEST=$TMP/hooks/demo/000001.request
[ -s "$REQUEST" ] || die "the receiver got no request ($REQUEST missing)"
say "the receiver got:"
tr -d '\r' <"$REQUEST" | sed 's/^/    /'
echo
say "the namespace_webhook_deliveries row:"
psql_su djinn "SELECT 'webhook_id=' || webhook_id, 'event_id=' || convert_from(event_id, 'UTF8'),
  'event=' || event, 'redelivery=' || redelivery, 'error=' || COALESCE(error, 'NULL'),
  'response_code=' || COALESCE(response_code::text, 'NULL'), 'duration=' || duration || ' ns'
  FROM namespace_webhook_deliveries WHERE webhook_id = $HOOK_ID" | tr '|' '\n' | sed 's/^/    /'
CODE=$(psql_su djinn "SELECT response_code FROM namespace_webhook_deliveries WHERE webhook_id = $HOOK_ID")
[ "$CODE" = 200 ] || die "the delivery was not answered 200 (response_code $CODE)"
SIGNATURE=$(python3 -c 'import hashlib, hmac, sys
raw = open(sys.argv[1], "rb").read()
body = raw.split(b"\r\n\r\n", 1)[1]
print("sha256=" + hmac.new(b"s3cret-hook", body, hashlib.sha256).hexdigest())' "$REQUEST")
grep -q "X-Djinn-Ci-Signature: $SIGNATURE" "$REQUEST" || die "the signature does not match the body"
say "X-Djinn-Ci-Signature matches HMAC-SHA256(secret, body)"

# --- the queue ---------------------------------------------------------------

ACTIVE=$(rcli LLEN "$QUEUE:active") SCHEDULED=$(rcli ZCARD "$QUEUE:scheduled")
DEAD=$(rcli ZCARD "$QUEUE:dead") DATA=$(rcli HLEN "$QUEUE:data")
CONSUMERS=$(rcli ZCARD "$QUEUE:consumers")
say "queue $QUEUE: LLEN active=$ACTIVE, ZCARD scheduled=$SCHEDULED, ZCARD dead=$DEAD, HLEN data=$DATA, ZCARD consumers=$CONSUMERS"
[ "$ACTIVE$SCHEDULED$DEAD$DATA" = 0000 ] || die "the queue is not empty after the job"
HOOKS_LEFT=$(rcli HLEN "${QUEUE}_webhooks:data")
say "queue ${QUEUE}_webhooks: HLEN data=$HOOKS_LEFT"
[ "$HOOKS_LEFT" = 0 ] || die "the webhook queue is not empty after the delivery"

# --- what an operator sees ------------------------------------------------------

say "djinn-consumer status (the running master, through its control socket):"
OUT=$("$BIN" -config "$TMP/consumer.conf" status 2>&1) || die "djinn-consumer status failed: $OUT"
printf '%s\n' "$OUT" | sed 's/^/    /'
say "djinn-consumer queue:"
OUT=$("$BIN" -config "$TMP/consumer.conf" queue 2>&1) || die "djinn-consumer queue failed: $OUT"
printf '%s\n' "$OUT" | sed 's/^/    /'

# --- stop everything -----------------------------------------------------------

say "stopping djinn-consumer (SIGTERM to pid $CONSUMER_PID)"
kill -s TERM "$CONSUMER_PID"
wait_for 40 consumer_gone ||
  die "djinn-consumer did not stop within 40 s"
wait "$CONSUMER_PID"
rc=$?
CONSUMER_PID=""
[ "$rc" -eq 0 ] || die "djinn-consumer exited with status $rc"
[ ! -e "$TMP/consumer.pid" ] || die "the pidfile $TMP/consumer.pid was not removed"
[ "$(rcli ZCARD "$QUEUE:consumers")" = 0 ] || die "consumers still registered in $QUEUE:consumers"
say "djinn-consumer exited with status 0; its log:"
sed 's/^/    /' "$TMP/consumer.log"

say "stopping postgresql (pid $PG_PID)"
as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -m fast -w -t 30 stop >/dev/null || die "pg_ctl stop failed"
PG_STARTED=0
! alive "$PG_PID" || die "postgres (pid $PG_PID) is still running"

say "stopping redis (pid $REDIS_PID)"
kill -s TERM "$REDIS_PID"
wait "$REDIS_PID"
rc=$?
REDIS_PID=""
[ "$rc" -eq 0 ] || die "redis-server exited with status $rc"

kill "$HTTP_PID" 2>/dev/null
wait "$HTTP_PID" 2>/dev/null
HTTP_PID=""

say "demo passed: image_downloads row $DOWNLOAD_ID finished with no error, $STORED matches the served image, webhook $HOOK_ID got the signed images event"
