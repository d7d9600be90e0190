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
# fresh server per concurrency. Figures: wall time, resources written per second, the uploader's CPU (user+sys,
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

validation_alone() {  # folder
    /usr/bin/time -f "%e %U %S" "$BIN/fhirbundle" validate "$1" 2>"$WORK/validate.time" >/dev/null
    awk '{printf "  (of which the offline validation alone: %.2f s CPU)\n", $2 + $3}' "$WORK/validate.time"
}

echo "generating and converting $ROWS rows per table in $WORK ..."
prepare "$ROWS" "$WORK/out"
echo "release build, $(nproc) cores; the server runs in its own process:"
for c in 1 4 16; do upload_to_test_server "$WORK/out" "$c"; done
validation_alone "$WORK/out"
if [ -n "${SEKMET_BIN:-}" ]; then
    "$BIN/fhirbundle" convert fixtures/synthea/mapping.yaml --out "$WORK/out-synthea" --quiet
    for c in 1 4 16; do upload_to_sekmet "$WORK/out-synthea" "$c"; done
    validation_alone "$WORK/out-synthea"
fi
if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
