#!/usr/bin/env bash
# Times `fhirupload` (release build) against local FHIR servers, at concurrency 1, 4 and 16, and measures the
# uploader's own CPU per resource.
#
# usage: scripts/benchmark-upload.sh [ROWS]     (default 20000)
#
# It generates ROWS rows per table of the seed-shaped export (scripts/generate-seed-export.py: 4 resources per row
# in three steps, the last a batch of Encounter+ClinicalImpression transactions), converts them, and uploads the
# folder to the project's FHIR test server (Tests/fhir-test-server: Medplum's semantics, in memory, its own
# process), once per concurrency, each time into a fresh server. With sekmet available (SEKMET_BIN, by default the
# one scripts/install-test-tools.sh puts in .venv-ci/) it also uploads the Synthea
# mapping's output (fixtures/synthea, about 26,000 resources in batches) to sekmet-fhir (SQLite, much slower), a
# fresh server per concurrency. Then the quota scenario (see QUOTA below): synchronous vs --async under a scaled
# Medplum interaction quota, with the 429s each met. Figures: wall time, resources written per second, the uploader's CPU (user+sys,
# including its offline validation of the folder, which is also shown alone), CPU ms per resource and % of one
# core per 1,000 resources/s, peak memory.
set -euo pipefail
ROWS=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/fhirupload-bench.XXXXXX)}
cd "$ROOT"
if [ -z "${SEKMET_BIN:-}" ] && [ -x .venv-ci/bin/sekmet ]; then SEKMET_BIN="$ROOT/.venv-ci/bin/sekmet"; fi
for product in fhirbundle fhirupload fhir-test-server; do swift build -c release --product "$product" >/dev/null; done
BIN="$ROOT/.build/release"

prepare() {  # rows outdir
    python3 scripts/generate-seed-export.py "$1" "$WORK/csv-$1" >/dev/null
    "$BIN/fhirbundle" convert "$WORK/csv-$1/mapping.yaml" --out "$2" --quiet
}

report() {  # label folder concurrency timefile
    local resources wall cpu rss
    resources=$(sed -n 's/.*: \([0-9]*\) written, .*/\1/p' "$4" | head -1)  # from the uploader's summary (refused entries excluded)
    read -r wall cpu rss < <(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); w=0; for(i=1;i<=n;i++) w=w*60+p[i]} /User time/ {u=$2} /System time/ {s=$2} /Maximum resident/ {m=$2} END {print w, u+s, int(m/1024)}' "$4")
    python3 - "$1" "$3" "$resources" "$wall" "$cpu" "$rss" <<'PY'
import sys
label, conc, n, wall, cpu, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
ms = cpu / n * 1000
print(f"{label:<12} concurrency {conc:>2}: {n:>7} written {wall:7.2f} s {n / wall:7.0f} resources/s | uploader CPU {cpu:6.2f} s "
      f"= {ms:.4f} ms/resource = {ms * 100:.1f}% of a core per 1,000 resources/s, {rss} MiB peak")
PY
}

upload_to_test_server() {  # folder concurrency
    local fifo="$WORK/server.stdin" url
    rm -f "$fifo" && mkfifo "$fifo"
    "$BIN/fhir-test-server" <"$fifo" >"$WORK/server.url" 2>"$WORK/server.log" &
    local pid=$!
    exec 3>"$fifo"
    for _ in $(seq 50); do [ -s "$WORK/server.url" ] && break; sleep 0.1; done
    url=$(head -1 "$WORK/server.url")
    rm -rf "$1/upload"
    /usr/bin/time -v "$BIN/fhirupload" "$1" --server "$url" --concurrency "$2" --quiet 2>"$WORK/upload.time" >/dev/null \
        || { tail -20 "$WORK/upload.time"; exit 1; }
    exec 3>&-
    wait "$pid"
    report test-server "$1" "$2" "$WORK/upload.time"
}

upload_to_sekmet() {  # folder concurrency
    local port=$((20000 + RANDOM % 20000)) dir="$WORK/sekmet-$2"
    mkdir -p "$dir"
    printf 'base_url: http://127.0.0.1:%s/fhir\nhost: 127.0.0.1\nport: %s\ndata_dir: %s/data\nsimulator:\n  enabled: false\n' "$port" "$port" "$dir" >"$dir/settings.yaml"
    "$SEKMET_BIN" serve -c "$dir/settings.yaml" --host 127.0.0.1 --port "$port" >"$dir/log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/fhir/metadata" >/dev/null && break; sleep 0.2; done
    rm -rf "$1/upload"
    /usr/bin/time -v "$BIN/fhirupload" "$1" --server "http://127.0.0.1:$port/fhir" --concurrency "$2" --quiet \
        2>"$WORK/upload.time" >/dev/null || { tail -20 "$WORK/upload.time"; exit 1; }
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    report sekmet "$1" "$2" "$WORK/upload.time"
}

# The quota scenario: Medplum's FHIR interaction quota (50,000 points per user per 60 s; a conditional update costs
# 120: its search 20 and its write 100) scaled to the test: QUOTA points per window (default 1600000/10, i.e.
# 160,000 points/s, 192x Medplum's 833/s, so that ROWS=20000 takes about a minute synchronously).
QUOTA=${QUOTA:-1600000/10}

upload_under_quota() {  # label folder extra-args...
    local label=$1 folder=$2 fifo="$WORK/server.stdin" url
    shift 2
    rm -f "$fifo" && mkfifo "$fifo"
    "$BIN/fhir-test-server" --quota "$QUOTA" <"$fifo" >"$WORK/server.url" 2>"$WORK/server.log" &
    local pid=$!
    exec 3>"$fifo"
    for _ in $(seq 50); do [ -s "$WORK/server.url" ] && break; sleep 0.1; done
    url=$(head -1 "$WORK/server.url")
    rm -rf "$folder/upload"
    /usr/bin/time -v "$BIN/fhirupload" "$folder" --server "$url" --quiet "$@" 2>"$WORK/upload.time" >/dev/null \
        || { tail -20 "$WORK/upload.time"; exit 1; }
    exec 3>&-
    wait "$pid"
    local throttled waited wall cpu
    throttled=$(sed -n 's/^Rate limit: \([0-9]*\) answers 429.*/\1/p' "$WORK/upload.time")
    waited=$(sed -n 's/.*requests waited \(.*\) in all.*/\1/p' "$WORK/upload.time")
    read -r wall cpu < <(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); w=0; for(i=1;i<=n;i++) w=w*60+p[i]} /User time/ {u=$2} /System time/ {s=$2} END {print w, u+s}' "$WORK/upload.time")
    printf '%-34s %7.2f s  429s: %-5s quota waits: %-10s uploader CPU %6.2f s  | server: %s\n' "$label" "$wall" "${throttled:-0}" "${waited:-0 s}" "$cpu" \
        "$(sed 's/^fhir-test-server: //' "$WORK/server.log")"
    echo "$wall" >"$WORK/wall-$label"
}

quota_scenario() {
    echo "quota scenario: $QUOTA points per window (Medplum: 50000/60), the same $((ROWS * 4)) resources, concurrency 4:"
    python3 scripts/generate-seed-export.py "$ROWS" "$WORK/csv-async" >/dev/null
    "$BIN/fhirbundle" convert "$WORK/csv-async/mapping.yaml" --out "$WORK/out-async" --quiet --profile medplum-async
    upload_under_quota synchronous "$WORK/out"
    upload_under_quota async "$WORK/out" --async
    upload_under_quota async-medplum-async-profile "$WORK/out-async" --async
    python3 - "$WORK" <<'PY'
import sys
w = lambda label: float(open(f"{sys.argv[1]}/wall-{label}").read())
print(f"synchronous / async wall time: {w('synchronous') / w('async'):.2f}x (profile medplum), "
      f"{w('synchronous') / w('async-medplum-async-profile'):.2f}x (profile medplum-async); "
      "with --async the batch-of-transactions step still goes synchronously (all or nothing)")
PY
}

validation_alone() {  # folder
    /usr/bin/time -f "%e %U %S" "$BIN/fhirbundle" validate "$1" 2>"$WORK/validate.time" >/dev/null
    awk '{printf "  (of which the offline validation alone: %.2f s CPU)\n", $2 + $3}' "$WORK/validate.time"
}

echo "generating and converting $ROWS rows per table in $WORK ..."
prepare "$ROWS" "$WORK/out"
echo "release build, $(nproc) cores; the server runs in its own process:"
for c in 1 4 16; do upload_to_test_server "$WORK/out" "$c"; done
validation_alone "$WORK/out"
quota_scenario
if [ -n "${SEKMET_BIN:-}" ]; then
    "$BIN/fhirbundle" convert fixtures/synthea/mapping.yaml --out "$WORK/out-synthea" --quiet
    for c in 1 4 16; do upload_to_sekmet "$WORK/out-synthea" "$c"; done
    validation_alone "$WORK/out-synthea"
fi
if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
