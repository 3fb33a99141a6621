#!/usr/bin/env bash
# Side-by-side training throughput of a Burn user's own model on rnnlm's cores against PyTorch:
# the primer's sequence classifier (inputs [batch, 28, 28] -> 2-layer LSTM or GRU -> last step
# -> Linear 10, cross-entropy, Adam 1e-3) as `rnnlm bench --classifier CASE` (plain Burn
# autodiff, flex) and as scripts/peer_classifier.py (nn.LSTM / nn.GRU), alternating ours and
# theirs in one run, then medians and ratios. Cases: lstm-256 (batch 128), gru-256 (batch 128),
# lstm-512 (batch 32), bilstm-256-packed (bidirectional, batch 128 of random lengths 14..=28,
# against pack_padded_sequence).
#
#   bash scripts/bench-classifier-vs-pytorch.sh [ROUNDS] [OUTDIR]
#
# PyTorch runs with oneDNN on and off and keeps its better figure. Ours runs twice per round:
# as every program does (the first fused scan makes glibc keep freed memory,
# rnnlm::fused::keep_freed_memory) and with glibc's defaults (RNNLM_MALLOC_DEFAULTS=1). Needs a
# built `target/release/rnnlm` (or RNNLM=path) and a Python with torch (PY=path; default: the
# reference's .venv, then ~/.cache/rnnlm/peer-venv). BASELINE=path runs another rnnlm binary
# too (the landed one, for a change's A/B), on the cases it has. Runs in its own session with
# autogroup nice -15, as scripts/bench-vs-pytorch.sh does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/../shared/peers/pytorch}
ROUNDS=${1:-3}
OUT=${2:-$(mktemp -d)}
RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
require_python_and_rnnlm
mkdir -p "$OUT"
echo "autogroup $(cat /proc/self/autogroup 2>/dev/null); results in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"
# name:cell:hidden:batch[:peer options, comma-separated]
CASES=${CASES:-"lstm-256:lstm:256:128 gru-256:gru:256:128 lstm-512:lstm:512:32 bilstm-256-packed:lstm:256:128:--bidirectional,--shortest,14"}
STEPS=${STEPS:-20}
for round in $(seq "$ROUNDS"); do
    for spec in $CASES; do
        IFS=: read -r case cell hidden batch extra <<< "$spec"
        echo "=== round $round: $case ($(date +%T))"
        "$RNNLM" bench --classifier "$case" --device flex --json --steps "$STEPS" >> "$OUT/ours.jsonl"
        RNNLM_MALLOC_DEFAULTS=1 "$RNNLM" bench --classifier "$case" --device flex --json \
            --steps "$STEPS" >> "$OUT/ours.jsonl"
        if [ -n "${BASELINE:-}" ]; then
            "$BASELINE" bench --classifier "$case" --device flex --json --steps "$STEPS" \
                >> "$OUT/baseline.jsonl" 2> /dev/null || echo "  (the baseline has no $case)"
        fi
        for mkldnn in on off; do
            "$PY" "$ROOT/scripts/peer_classifier.py" --cell "$cell" --hidden "$hidden" --layers 2 \
                --batch-size "$batch" --mkldnn "$mkldnn" --repeats "$STEPS" ${extra//,/ } \
                --json "$OUT/peer.$case.$mkldnn.$round.json" > /dev/null
        done
    done
done
"$PY" - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
ours = [json.loads(line) for line in open(f"{out}/ours.jsonl")]
try:
    baseline = [json.loads(line) for line in open(f"{out}/baseline.jsonl")]
except FileNotFoundError:
    baseline = []
med = statistics.median
print("\n| case | batch | ours, samples/s | ours, malloc defaults | PyTorch | ratio | ratio, malloc defaults | ours: peak MB | PyTorch: peak MB |")
print("|---|---|---|---|---|---|---|---|---|")
for case in dict.fromkeys(r["case"] for r in ours):
    kept = [r for r in ours if r["case"] == case and r["freed_memory_kept"]]
    plain = [r for r in ours if r["case"] == case and not r["freed_memory_kept"]]
    theirs = [json.load(open(p)) for p in glob.glob(f"{out}/peer.{case}.*.json")]
    if not kept or not theirs:
        continue
    best = max(med([t["samples_per_s"] for t in theirs if t["mkldnn"] == m])
               for m in ("on", "off") if any(t["mkldnn"] == m for t in theirs))
    mine = med([r["samples_per_s"] for r in kept])
    mine_plain = med([r["samples_per_s"] for r in plain]) if plain else float("nan")
    mem = med([r["peak_rss_bytes"] for r in kept]) / 1e6
    tmem = med([t["peak_rss_bytes"] for t in theirs]) / 1e6
    print(f"| {case} | {kept[0]['batch_size']} | {mine:.0f} | {mine_plain:.0f} | {best:.0f} | "
          f"{mine / best:.2f} | {mine_plain / best:.2f} | {mem:.0f} | {tmem:.0f} |")
if baseline:
    print("\n| case | ours, samples/s | baseline | ours / baseline |")
    print("|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in baseline):
        mine = [r["samples_per_s"] for r in ours if r["case"] == case and r["freed_memory_kept"]]
        base = [r["samples_per_s"] for r in baseline if r["case"] == case]
        if mine and base:
            print(f"| {case} | {med(mine):.0f} | {med(base):.0f} | {med(mine) / med(base):.2f} |")
PY
