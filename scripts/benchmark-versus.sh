#!/usr/bin/env bash
# Compares the working tree's release build with an earlier commit's on the commands of issue 12's table, in one
# session, interleaved (absolute times drift on a shared machine; neighbours in time compare).
#
# usage: scripts/benchmark-versus.sh COMMIT [ROWS] [ROUNDS]      (default: 200000 rows per table, 2 rounds)
#
# It builds COMMIT in a git worktree inside the benchmark folder (BENCH_DIR, else a new temporary one), or takes
# BEFORE_BIN, an fhirbundle built already, generates the example-shaped export with ROWS rows per table, then, ROUNDS times, runs with each build:
# the default `convert` (with its validation), `convert --no-validate`, and `validate` of that output; and the naive
# script once per round. It prints each run's seconds and resources/s, and the default convert / naive script ratio.
set -euo pipefail
COMMIT=${1:?usage: scripts/benchmark-versus.sh COMMIT [ROWS] [ROUNDS]}
ROWS=${2:-200000}
ROUNDS=${3:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/fhirbundle-versus.XXXXXX)}
cd "$ROOT"
swift build -c release --product fhirbundle >/dev/null
AFTER="$ROOT/.build/release/fhirbundle"
if [ -z "${BEFORE_BIN:-}" ]; then
    tree="$WORK/before-$COMMIT"
    [ -d "$tree" ] || git worktree add --detach "$tree" "$COMMIT" >/dev/null
    (cd "$tree" && swift build -c release --product fhirbundle >/dev/null)
    BEFORE_BIN="$tree/.build/release/fhirbundle"
fi
echo "generating $ROWS rows per table in $WORK ..."
python3 scripts/generate-seed-export.py "$ROWS" "$WORK/csv" >/dev/null

seconds() {  # command...: runs it, prints its wall-clock seconds; fails the script if it fails
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    end=$(date +%s.%N)
    python3 -c "print(round($end - $start, 2))"
}
report() {  # round label seconds
    printf '%s %-34s %7.2f s %9.0f resources/s\n' "$1" "$2" "$3" "$(python3 -c "print($RESOURCES / $3)")"
}

RESOURCES=$((ROWS * 4))
for round in $(seq "$ROUNDS"); do
    for side in before after; do
        bin=$AFTER
        [ "$side" = before ] && bin=$BEFORE_BIN
        rm -rf "$WORK/out-$side" "$WORK/out-$side-nv"
        sync
        default=$(seconds "$bin" convert "$WORK/csv/mapping.yaml" --out "$WORK/out-$side" --quiet)
        report "$round" "$side: convert (default)" "$default"
        sync
        report "$round" "$side: convert --no-validate" "$(seconds "$bin" convert "$WORK/csv/mapping.yaml" --out "$WORK/out-$side-nv" --quiet --no-validate)"
        sync
        report "$round" "$side: validate" "$(seconds "$bin" validate "$WORK/out-$side-nv")"
        eval "default_$side=$default"
    done
    rm -rf "$WORK/out-naive"
    sync
    naive=$(seconds python3 scripts/naive-convert.py "$WORK/csv" "$WORK/out-naive")
    report "$round" "naive script" "$naive"
    echo "$round default convert / naive script: before $(python3 -c "print(round($naive / $default_before, 2))"), after $(python3 -c "print(round($naive / $default_after, 2))")"
done
