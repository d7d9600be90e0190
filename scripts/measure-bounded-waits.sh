#!/usr/bin/env bash
# Measures how long fhirupload (release build, default options) takes to give up on a server that never answers
# properly: a body that stalls, a body that trickles, a Retry-After of 11 days, a server that is gone. Each case
# uploads the guide's example to the project's test server (Tests/fhir-test-server) with that fault on every
# bundle request; the cases run side by side. Prints the wall time and the reason fhirupload gave, per case.
#
# usage: scripts/measure-bounded-waits.sh        (about 6 minutes: the defaults are --timeout 120,
#                                                  --max-outage 300, --max-server-wait 300)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/bounded-waits.XXXXXX)
cd "$ROOT"
for product in fhirbundle fhirupload fhir-test-server; do swift build -c release --product "$product" >/dev/null; done
BIN="$ROOT/.build/release"
"$BIN/fhirbundle" convert fixtures/medplum-example/mapping.yaml --out "$WORK/out" --quiet

run_case() {  # name fault-option...
    local name=$1; shift
    local dir="$WORK/$name"
    mkdir -p "$dir"
    cp -r "$WORK/out" "$dir/out"
    mkfifo "$dir/stdin"
    "$BIN/fhir-test-server" "$@" <"$dir/stdin" >"$dir/url" 2>/dev/null &
    exec {hold}>"$dir/stdin"  # keeps the server's stdin open
    for _ in $(seq 50); do [ -s "$dir/url" ] && break; sleep 0.1; done
    local url; url=$(head -1 "$dir/url")
    if [ "$name" = server-gone ]; then exec {hold}>&-; sleep 0.5; fi  # the server ends with its stdin
    local start end
    start=$(date +%s.%N)
    "$BIN/fhirupload" "$dir/out" --server "$url" --quiet >/dev/null 2>"$dir/stderr" || true
    end=$(date +%s.%N)
    exec {hold}>&- 2>/dev/null || true
    printf '%-14s %7.1f s  %s\n' "$name" "$(echo "$end - $start" | bc)" "$(grep '^error:' "$dir/stderr" | cut -c1-160)"
}

run_case stalled-body --fault stall-body &
run_case trickled-body --fault trickle &
run_case retry-after --fault retry-after=999999 &
run_case server-gone &
wait
rm -rf "$WORK"
