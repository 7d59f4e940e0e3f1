#!/bin/sh
# Builds the libFuzzer targets for the wire decoders and the Djinn-syntax
# config reader, and runs each one.
#
#   fuzz/run.sh [SECONDS]     SECONDS per target, default 60
#
# Seeds come from tests/data/vectors (msgpack envelopes, gob payloads), a
# few JSON payloads and tests/data/djinn/*.conf (Djinn-syntax configs),
# copied into a temporary corpus. The payload decoders (envelope, gob, json)
# take inputs up to the 16 MiB payload limit (-max_len), and each first runs
# once on generated inputs at that limit (gob: 2^17 values sharing 16 MiB of
# type and field names, bare and in an envelope; JSON: a long source and a
# wide array) under the same RSS limit: a decoder whose memory is not
# linear in its input fails there with an out-of-memory. Fails if any
# target finds a crash, a leak, a timeout or an out-of-memory; its
# reproducer is kept in build/fuzz-artifacts/. Prints exec/s and total
# execs per target. Needs clang++ with libFuzzer (Debian: clang,
# libclang-rt-dev) and python3.
set -eu

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/djinn-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
artifacts="$root/build/fuzz-artifacts"
mkdir -p "$artifacts"

cxx=${CXX_FUZZ:-clang++}
cflags="-std=c++20 -O1 -g -fno-omit-frame-pointer -I. \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  $(pkg-config --cflags msgpack nlohmann_json)"
libs=$(pkg-config --libs msgpack)

build() {  # target, then the sources it needs besides fuzz/<target>_fuzz.cc
  target=$1
  shift
  echo "fuzz: building $target"
  # shellcheck disable=SC2086
  $cxx $cflags "fuzz/${target}_fuzz.cc" "$@" -o "$work/$target" $libs
}
build envelope common/status.cc common/envelope.cc common/gob.cc common/payload.cc
build gob common/status.cc common/gob.cc
build json common/status.cc common/payload.cc common/gob.cc
build djinn_conf common/status.cc common/djinn_conf.cc common/units.cc

mkdir "$work/envelope.corpus" "$work/gob.corpus" "$work/json.corpus" "$work/djinn_conf.corpus" \
  "$work/envelope.limit" "$work/gob.limit" "$work/json.limit"
cp tests/data/vectors/*.msgpack "$work/envelope.corpus/"
cp tests/data/vectors/*.gob "$work/gob.corpus/"
cp tests/data/djinn/*.conf "$work/djinn_conf.corpus/"
# Must match kMaxPayloadBytes (common/payload.h).
max_payload=16777216
python3 - "$work" "$max_payload" <<'PY'
import struct, sys
work, limit = sys.argv[1], int(sys.argv[2])
def u(v):  # gob unsigned: < 0x80 as is, else negated byte count + big-endian
    if v < 0x80:
        return bytes([v])
    b = v.to_bytes((v.bit_length() + 7) // 8, "big")
    return bytes([256 - len(b)]) + b
def i(v):  # gob int: sign-folded
    return u((~v << 1) | 1 if v < 0 else v << 1)
def s(b):
    return u(len(b)) + b
def msg(b):
    return u(len(b)) + b
end = b"\0"
def typedef(tid, kind_field, name, rest=b""):
    return i(-tid) + u(kind_field + 1) + b"\1\1" + s(name) + end + rest + end + end
def long_names(size):
    # interface{} holding []T, T struct{<long field name> bool} with a long
    # type name, every element {true}: one name shared by 2^17 values.
    n = (1 << 17) - 2
    value = end + u(n) + b"\1\1\0" * n
    names = size - len(value) - 128
    t_def = typedef(65, 2, b"T" * (names // 2),
                    b"\1\1\1" + s(b"F" * (names - names // 2)) + b"\1" + i(1) + end)
    gob = (msg(i(8) + end + s(b"main.L") + t_def) + msg(typedef(66, 1, b"", b"\1" + i(65))) +
           msg(i(66) + u(len(value)) + value))
    assert size - 128 < len(gob) <= size, len(gob)
    return gob
open(work + "/gob.limit/long_names.gob", "wb").write(long_names(limit))
gob = long_names(limit - 64)  # the whole envelope within -max_len
env = (b"\x83\xa2ID\xa4seed\xa4Data\xc6" + struct.pack(">I", len(gob)) + gob +
       b"\xa7Attempt\xd3" + bytes(8))
open(work + "/envelope.limit/long_names.msgpack", "wb").write(env)
head = b'{"job":"download_job","id":1,"image_id":2,"source":"https://e.com/'
open(work + "/json.limit/long_source", "wb").write(head + b"a" * (limit - len(head) - 2) + b'"}')
head = b'{"job":"ping","x":['
count = (limit - len(head) - 2) // 3
open(work + "/json.limit/wide_array", "wb").write(head + b"{}," * (count - 1) + b'{}]}')
PY
i=0
for seed in '{"job":"ping"}' \
    '{"job":"download_job","id":12,"image_id":34,"source":"https://e.com/a.qcow2"}' \
    '{"job":"download_job","id":-9223372036854775808,"source":"sftp://u@h:22/p?timeout=5s"}' \
    '{"job":"download_job","id":1.5,"image_id":"x","source":""}' \
    ' {"x":[1,{"y":null}],"job":"nope","id":18446744073709551615} '; do
  i=$((i + 1))
  printf '%s' "$seed" > "$work/json.corpus/seed$i"
done

status=0
for target in envelope gob json djinn_conf; do
  log="$work/$target.log"
  max_len=
  if [ -d "$work/$target.limit" ]; then
    max_len=-max_len=$max_payload
    # The inputs at the limit run once each, not in the corpus: mutating
    # 16 MiB inputs would cut exec/s a thousandfold.
    echo "fuzz: running $target on inputs at the payload limit"
    # shellcheck disable=SC2086
    if ! "$work/$target" -rss_limit_mb=2048 -timeout=10 $max_len \
        -artifact_prefix="$artifacts/$target-" "$work/$target.limit"/* > "$log" 2>&1; then
      status=1
      echo "fuzz: $target FAILED at the payload limit; log tail:" >&2
      tail -n 40 "$log" >&2
      continue
    fi
  fi
  echo "fuzz: running $target for ${seconds}s"
  # shellcheck disable=SC2086
  if "$work/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 $max_len \
      -print_final_stats=1 -artifact_prefix="$artifacts/$target-" \
      "$work/$target.corpus" > "$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    corpus=$(ls "$work/$target.corpus" | wc -l)
    echo "fuzz: $target ok: $execs execs, $rate exec/s, corpus $corpus files"
  else
    status=1
    echo "fuzz: $target FAILED; reproducer in $artifacts; log tail:" >&2
    tail -n 40 "$log" >&2
  fi
done
exit $status
