#!/bin/sh
# Builds the libFuzzer targets for the wire decoders and the Djinn-syntax
# config reader, and runs each one.
#
#   fuzz/run.sh [SECONDS]     SECONDS per target, default 60
#
# Seeds come from tests/data/vectors (msgpack envelopes, gob payloads), a
# few JSON payloads and tests/data/djinn/*.conf (Djinn-syntax configs),
# copied into a temporary corpus. Fails if any target finds a crash, a leak,
# a timeout or an out-of-memory; its reproducer is kept in
# build/fuzz-artifacts/. Prints exec/s and total execs per target.
# Needs clang++ with libFuzzer (Debian: clang, libclang-rt-dev).
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

mkdir "$work/envelope.corpus" "$work/gob.corpus" "$work/json.corpus" "$work/djinn_conf.corpus"
cp tests/data/vectors/*.msgpack "$work/envelope.corpus/"
cp tests/data/vectors/*.gob "$work/gob.corpus/"
cp tests/data/djinn/*.conf "$work/djinn_conf.corpus/"
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
  echo "fuzz: running $target for ${seconds}s"
  if "$work/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
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
