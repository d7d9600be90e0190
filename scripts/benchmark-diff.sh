#!/usr/bin/env bash
# Times `fhirbundle diff` (release build) on the seed-shaped export against itself with 1% of its rows changed.
#
# usage: scripts/benchmark-diff.sh [ROWS]        (default 1000000; BIN=path/to/fhirbundle to use another build)
#
# Generates ROWS rows per table (patients, conditions, encounters, notes), converts it, changes the family name of
# every 100th patient and the onset of every 100th condition, converts again, then runs on one core (taskset):
# diff (text), diff --format json, and diff --out (the delta, validated). Prints seconds, resources compared per
# second and peak memory (max RSS) of each.
set -euo pipefail
ROWS=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/fhirbundle-diff.XXXXXX)}
cd "$ROOT"
if [ -z "${BIN:-}" ]; then
    swift build -c release --product fhirbundle >/dev/null
    BIN="$ROOT/.build/release/fhirbundle"
fi
PIN=""
command -v taskset >/dev/null && PIN="taskset -c 0"

echo "generating $ROWS rows per table in $WORK ..."
python3 scripts/generate-seed-export.py "$ROWS" "$WORK/v1"
cp -r "$WORK/v1" "$WORK/v2"
python3 - "$WORK/v2" <<'PY'
import csv, sys
folder = sys.argv[1]
def change(name, column, edit):
    path = f"{folder}/{name}"
    rows = list(csv.reader(open(path, newline="")))
    i = rows[0].index(column)
    for n, row in enumerate(rows[1:], 1):
        if n % 100 == 0:
            row[i] = edit(row[i])
    csv.writer(open(path, "w", newline=""), lineterminator="\n").writerows(rows)
change("patients.csv", "last_name", lambda v: v + "-Changed")
change("patient_conditions.csv", "onset_date", lambda v: "2001-01-01")
PY
"$BIN" convert "$WORK/v1/mapping.yaml" --out "$WORK/out1" --quiet --no-validate
"$BIN" convert "$WORK/v2/mapping.yaml" --out "$WORK/out2" --quiet --no-validate
resources=$(python3 -c "import json;m=json.load(open('$WORK/out2/manifest.json'));print(sum(m['resourceCounts'].values()))")

measure() {  # label, then the diff arguments
    local label=$1; shift
    local log="$WORK/$label.time"
    sync
    /usr/bin/time -v $PIN "$BIN" diff "$WORK/out1" "$WORK/out2" "$@" >"$WORK/$label.out" 2>"$log" || { cat "$log"; exit 1; }
    local secs rss
    secs=$(python3 -c "import sys;p=[l.split(': ')[1] for l in open('$log') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
    rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$log")
    printf '%-14s %9d resources each side %7.2f s %9.0f resources/s %6d MiB peak\n' \
        "$label" "$resources" "$secs" "$(python3 -c "print($resources/$secs)")" "$rss"
}

measure diff
head -n 1 "$WORK/diff.out"
measure diff-json --format json
measure diff-out --out "$WORK/delta" --deletes
grep -E "^Wrote|^Validated" "$WORK/diff-out.time" || true
