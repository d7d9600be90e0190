#!/usr/bin/env bash
# Times `fhirbundle convert` and `fhirbundle validate` (release build) on a synthetic export in the shape of Medplum's example.
#
# usage: scripts/benchmark-convert.sh [ROWS]        (default 1000000)
#
# For CSV and for XML it generates ROWS rows per table (patients, patient conditions, encounters, notes), converts
# them on one core (taskset), and prints resources/s, records/s and peak memory (max RSS); then the default convert
# (with its validation) against the naive script scripts/naive-convert.py, as a speed ratio; then validates the CSV
# artifacts, and their NDJSON files alone (as a folder of foreign data). The full example holds
# the notes and conditions tables as lookups (tables the mapping asks for), so its memory includes them; the
# patients-only run has no lookup and shows the streaming part alone.
#
# Every timed run starts from the same memory state: dirty pages are flushed (sync) and, when the script may (root),
# the page cache is dropped. Otherwise a run pays for reclaiming the gigabytes earlier runs left in the cache: the
# same conversion measured 2.5 s to 11 s of system time depending on what ran before it.
set -euo pipefail
ROWS=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/fhirbundle-bench.XXXXXX)}
cd "$ROOT"
swift build -c release --product fhirbundle >/dev/null
BIN="$ROOT/.build/release/fhirbundle"
PIN=""
command -v taskset >/dev/null && PIN="taskset -c 0"

patients_only() {  # mapping output: the same mapping with only its patients step and no lookups
    python3 - "$1" "$2" <<'PY'
import sys
text = open(sys.argv[1]).read()
head, steps = text.split("steps:", 1)
before_lookups, rest = head.split("lookups:", 1)
maps = "maps:" + rest.split("maps:", 1)[1]
patients = steps.split("  # Step 2")[0]
open(sys.argv[2], "w").write(before_lookups + maps + "steps:" + patients)
PY
}

settle() {  # flush and, if allowed, drop the page cache before a timed run
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 1 > /proc/sys/vm/drop_caches; fi
}

measure() {  # label mapping outdir [flags]: --no-validate unless flags are given
    local label=$1 mapping=$2 out=$3
    local flags=${4:---no-validate}
    local log="$WORK/$label.time"
    settle
    /usr/bin/time -v $PIN "$BIN" convert "$mapping" --out "$out" --quiet $flags 2>"$log" || { cat "$log"; exit 1; }
    local secs rss resources records
    secs=$(python3 -c "import sys;p=[l.split(': ')[1] for l in open('$log') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
    rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$log")
    resources=$(python3 -c "import json;m=json.load(open('$out/manifest.json'));print(sum(m['resourceCounts'].values()))")
    records=$(python3 -c "import json;m=json.load(open('$out/manifest.json'));print(sum(s['rows'] for s in m['sources']))")
    printf '%-28s %9d records %9d resources %7.2f s %9.0f records/s %9.0f resources/s %6d MiB peak\n' \
        "$label" "$records" "$resources" "$secs" "$(python3 -c "print($records/$secs)")" "$(python3 -c "print($resources/$secs)")" "$rss"
}

echo "generating $ROWS rows per table in $WORK ..."
python3 scripts/generate-seed-export.py "$ROWS" "$WORK/csv"
python3 scripts/generate-seed-export.py "$ROWS" "$WORK/xml" --xml
ls -la "$WORK/csv" "$WORK/xml" | awk '/\.(csv|xml)$/ {printf "  %s %d MB\n", $9, $5/1000000}'

# Streaming alone: the patients step only, without lookups, 1 resource per row.
patients_only "$WORK/csv/mapping.yaml" "$WORK/csv/mapping-patients.yaml"
patients_only "$WORK/xml/mapping-xml.yaml" "$WORK/xml/mapping-patients.yaml"

echo "release build, one core ($(nproc) available):"
measure csv-patients-streaming "$WORK/csv/mapping-patients.yaml" "$WORK/out-csv-patients"
measure csv-full-example "$WORK/csv/mapping.yaml" "$WORK/out-csv"
measure xml-patients-streaming "$WORK/xml/mapping-patients.yaml" "$WORK/out-xml-patients"
measure xml-full-example "$WORK/xml/mapping-xml.yaml" "$WORK/out-xml"
# What a user runs: convert with its validation (and report.html), against the naive script (scripts/naive-convert.py:
# csv + json.dumps to NDJSON, nothing else), in the same run, as a ratio.
measure csv-default-convert "$WORK/csv/mapping.yaml" "$WORK/out-csv-default" " "
settle
naive_log="$WORK/naive.time"
/usr/bin/time -v $PIN python3 scripts/naive-convert.py "$WORK/csv" "$WORK/out-naive" 2>"$naive_log"
naive_secs=$(python3 -c "p=[l.split(': ')[1] for l in open('$naive_log') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
default_secs=$(python3 -c "p=[l.split(': ')[1] for l in open('$WORK/csv-default-convert.time') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
naive_resources=$(cat "$WORK"/out-naive/*.ndjson | wc -l)
printf '%-28s %9d resources %7.2f s %9.0f resources/s; default convert / naive speed: %.2f\n' naive-python-script "$naive_resources" \
    "$naive_secs" "$(python3 -c "print($naive_resources/$naive_secs)")" "$(python3 -c "print($naive_secs/$default_secs)")"

validate() {  # label folder resources: the offline validator, all rules
    local label=$1 folder=$2 resources=$3
    local log="$WORK/$label.time" out="$WORK/$label.out"
    settle
    /usr/bin/time -v $PIN "$BIN" validate "$folder" >"$out" 2>"$log" || { tail -5 "$out"; }
    local secs rss
    secs=$(python3 -c "p=[l.split(': ')[1] for l in open('$log') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))")
    rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$log")
    printf '%-28s %9d resources %7.2f s %9.0f resources/s %6d MiB peak (%s)\n' "$label" "$resources" "$secs" \
        "$(python3 -c "print($resources/$secs)")" "$rss" "$(tail -1 "$out")"
}

# The full CSV example's artifacts (bundles, their NDJSON mirror, checksums); then the same resources as NDJSON
# alone (no manifest, no bundles): foreign data, every line checked and indexed.
resources=$(python3 -c "import json;m=json.load(open('$WORK/out-csv/manifest.json'));print(sum(m['resourceCounts'].values()))")
validate validate-full-example "$WORK/out-csv" "$resources"
mkdir -p "$WORK/ndjson-only"
ln -f "$WORK"/out-csv/ndjson/*.ndjson "$WORK/ndjson-only/" 2>/dev/null || cp "$WORK"/out-csv/ndjson/*.ndjson "$WORK/ndjson-only/"
validate validate-ndjson-only "$WORK/ndjson-only" "$resources"
if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
