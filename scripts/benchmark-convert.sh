#!/usr/bin/env bash
# Times `fhirbundle convert` and `fhirbundle validate` (release build) on a synthetic export in the shape of Medplum's example.
#
# usage: scripts/benchmark-convert.sh [ROWS]        (default 1000000)
#
# For CSV and for XML it generates ROWS rows per table (patients, patient conditions, encounters, notes), converts
# them on one core (taskset, --threads 1), and prints resources/s, records/s and peak memory (max RSS); then the
# default convert (with its validation) with 1 thread and with all cores (--threads N, the default), each against
# the naive script scripts/naive-convert.py run in the same session, as a speed ratio; then `convert --no-validate`
# with all cores (rows evaluated on worker threads) against the one-core run; then validates the CSV
# artifacts, and their NDJSON files alone (as a folder of foreign data), with 1 thread and with N, and runs N one-thread
# validations at once to show how far N threads could go on this machine. The full example holds
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
CORES=$(nproc)

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

measure() {  # label mapping outdir [flags] [pin]: --no-validate on one core unless flags (and pin) are given
    local label=$1 mapping=$2 out=$3
    local flags=${4:---no-validate --threads 1}
    local pin=${5-$PIN}
    local log="$WORK/$label.time"
    settle
    /usr/bin/time -v $pin "$BIN" convert "$mapping" --out "$out" --quiet $flags 2>"$log" || { cat "$log"; exit 1; }
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

echo "release build, one core ($CORES available):"
measure csv-patients-streaming "$WORK/csv/mapping-patients.yaml" "$WORK/out-csv-patients"
measure csv-full-example "$WORK/csv/mapping.yaml" "$WORK/out-csv"
measure xml-patients-streaming "$WORK/xml/mapping-patients.yaml" "$WORK/out-xml-patients"
measure xml-full-example "$WORK/xml/mapping-xml.yaml" "$WORK/out-xml"
# What a user runs: convert with its validation (and report.html), with 1 thread on one core and with the default
# (all cores), each against the naive script (scripts/naive-convert.py: csv + json.dumps to NDJSON, nothing else) run
# just before it on one core, as a ratio (absolute times drift here; a ratio of neighbours does not).
seconds() { python3 -c "p=[l.split(': ')[1] for l in open('$1') if 'Elapsed (wall clock)' in l][0].split(':');print(sum(float(x)*60**i for i,x in enumerate(reversed(p))))"; }
naive() {  # label
    settle
    /usr/bin/time -v $PIN python3 scripts/naive-convert.py "$WORK/csv" "$WORK/out-naive" 2>"$WORK/$1.time"
    NAIVE_SECS=$(seconds "$WORK/$1.time")
    local n
    n=$(cat "$WORK"/out-naive/*.ndjson | wc -l)
    printf '%-28s %9d resources %7.2f s %9.0f resources/s\n' "$1" "$n" "$NAIVE_SECS" "$(python3 -c "print($n/$NAIVE_SECS)")"
}
naive naive-python-script-1
measure csv-default-convert-1-thread "$WORK/csv/mapping.yaml" "$WORK/out-csv-default-1" "--threads 1"
one=$(seconds "$WORK/csv-default-convert-1-thread.time")
ratio_one=$(python3 -c "print(round($NAIVE_SECS/$one, 2))")
naive naive-python-script-2
measure "csv-default-convert-$CORES-threads" "$WORK/csv/mapping.yaml" "$WORK/out-csv-default-n" " " ""
many=$(seconds "$WORK/csv-default-convert-$CORES-threads.time")
ratio_many=$(python3 -c "print(round($NAIVE_SECS/$many, 2))")
cmp -s "$WORK/out-csv-default-1/manifest.json" "$WORK/out-csv-default-n/manifest.json" && diff -rq "$WORK/out-csv-default-1" "$WORK/out-csv-default-n" >/dev/null \
    && same="byte-identical" || same="DIFFERENT"
echo "default convert / naive script speed: 1 thread $ratio_one, $CORES threads $ratio_many; $CORES threads vs 1: $(python3 -c "print(round($one/$many, 2))")x; artifacts $same"
# Without validation, the rows are evaluated on worker threads (all cores but the converter's): 1 thread against N,
# same artifacts.
measure "csv-no-validate-$CORES-threads" "$WORK/csv/mapping.yaml" "$WORK/out-csv-n" "--no-validate" ""
nv=$(seconds "$WORK/csv-no-validate-$CORES-threads.time")
diff -rq "$WORK/out-csv" "$WORK/out-csv-n" >/dev/null && same="byte-identical" || same="DIFFERENT"
echo "convert --no-validate: $CORES threads vs 1 (csv-full-example): $(python3 -c "print(round($(seconds "$WORK/csv-full-example.time")/$nv, 2))")x; artifacts $same"
# The streaming case, as a user runs it (validation included, all cores): its memory must not grow with the input.
measure "csv-patients-default-$CORES-threads" "$WORK/csv/mapping-patients.yaml" "$WORK/out-csv-patients-default" " " ""

validate() {  # label folder resources threads
    local label=$1 folder=$2 resources=$3 threads=$4
    local log="$WORK/$label.time" out="$WORK/$label.out" pin=""
    [ "$threads" = 1 ] && pin=$PIN
    settle
    /usr/bin/time -v $pin "$BIN" validate "$folder" --threads "$threads" >"$out" 2>"$log" || { tail -5 "$out"; }
    local secs rss
    secs=$(seconds "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$log")
    printf '%-28s %9d resources %7.2f s %9.0f resources/s %6d MiB peak (%s)\n' "$label" "$resources" "$secs" \
        "$(python3 -c "print($resources/$secs)")" "$rss" "$(tail -1 "$out")"
    VALIDATE_SECS=$secs
}

# The full CSV example's artifacts (bundles, their NDJSON mirror, checksums); then the same resources as NDJSON
# alone (no manifest, no bundles): foreign data, every line checked and indexed. Each with 1 thread and with N.
resources=$(python3 -c "import json;m=json.load(open('$WORK/out-csv/manifest.json'));print(sum(m['resourceCounts'].values()))")
validate validate-full-1-thread "$WORK/out-csv" "$resources" 1
v1=$VALIDATE_SECS
validate "validate-full-$CORES-threads" "$WORK/out-csv" "$resources" "$CORES"
# The machine's own ceiling for this work: CORES one-thread validations at once, each of a copy of its own (the
# validator hands pages back as it reads, so runs sharing files would read them for each other) on a core of its own,
# against one alone, timed just before. Independent runs share nothing but the memory system, the disk and the
# kernel, so their combined speed is the most that CORES threads of one run could reach here.
for ((c = 1; c < CORES; c++)); do [ -d "$WORK/out-csv-copy-$c" ] || cp -r "$WORK/out-csv" "$WORK/out-csv-copy-$c"; done
copy() { if [ "$1" = 0 ]; then echo "$WORK/out-csv"; else echo "$WORK/out-csv-copy-$1"; fi; }
settle
start=$(date +%s.%N)
$PIN "$BIN" validate "$WORK/out-csv" --threads 1 >/dev/null || true
solo=$(python3 -c "import time;print(time.time()-$start)")
settle
start=$(date +%s.%N)
pids=()
for ((c = 0; c < CORES; c++)); do
    pin_c=""
    [ -n "$PIN" ] && pin_c="taskset -c $c"
    $pin_c "$BIN" validate "$(copy $c)" --threads 1 >/dev/null &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done
ceiling=$(python3 -c "import time;print(round($CORES*$solo/(time.time()-$start), 2))")
for ((c = 1; c < CORES; c++)); do rm -rf "$WORK/out-csv-copy-$c"; done
echo "validate: $CORES threads vs 1: $(python3 -c "print(round($v1/$VALIDATE_SECS, 2))")x; $CORES independent one-thread validations at once: ${ceiling}x the speed of one (this machine's ceiling for $CORES threads)"
mkdir -p "$WORK/ndjson-only"
ln -f "$WORK"/out-csv/ndjson/*.ndjson "$WORK/ndjson-only/" 2>/dev/null || cp "$WORK"/out-csv/ndjson/*.ndjson "$WORK/ndjson-only/"
validate validate-ndjson-only-1-thread "$WORK/ndjson-only" "$resources" 1
validate "validate-ndjson-only-$CORES-threads" "$WORK/ndjson-only" "$resources" "$CORES"
if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
