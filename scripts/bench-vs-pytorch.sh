#!/usr/bin/env bash
# Side-by-side throughput: `rnnlm bench` against the PyTorch reference (../shared/peers/pytorch),
# same models (rnn-scratch 512, gru 256, lstm 256, 2-layer lstm 256), batch 32 x 35 steps,
# vocabulary 28, 2 threads, alternating ours and theirs in one run, then medians and ratios.
#
#   bash scripts/bench-vs-pytorch.sh [ROUNDS] [OUTDIR]
#
# PyTorch is measured with oneDNN on and off and its better figure is kept for each metric
# (oneDNN's LSTM is slow at batch-1 generation). Needs a built `target/release/rnnlm` (or
# RNNLM=path) and a Python with torch (PY=path; default: the reference's .venv, then
# ~/.cache/rnnlm/peer-venv). BASELINE=path runs another rnnlm binary (the landed one, say) in
# every round as well, alternating with ours, and adds its figures and ratios to the table.
#
# Timing on a shared machine: the kernel shares CPU per session (autogroup), so this script
# runs itself in its own session and lowers that session's autogroup nice, as run_all.sh does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/../shared/peers/pytorch}
ROUNDS=${1:-2}
OUT=${2:-$(mktemp -d)}
RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
require_python_and_rnnlm
mkdir -p "$OUT"
echo "autogroup $(cat /proc/self/autogroup 2>/dev/null); results in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"
MODELS=${MODELS:-"rnn-scratch:rnn_scratch gru:gru lstm:lstm deep-lstm:lstm2"}
# The machine's roof, in this run: a 2048x2048 float32 product in numpy (OpenBLAS, both cores;
# its CPU-type and cache overrides unset, which otherwise pick slower kernels), best of 10.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" - > "$OUT/roof.txt" <<'ROOF'
import time, numpy as np
a = np.random.rand(2048, 2048).astype(np.float32); b = np.random.rand(2048, 2048).astype(np.float32)
a @ b
best = float("inf")
for _ in range(10):
    started = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - started)
print(f"{2 * 2048**3 / best / 1e9:.1f}")
ROOF
for round in $(seq "$ROUNDS"); do
    for pair in $MODELS; do
        ours=${pair%%:*} theirs=${pair##*:}
        echo "=== round $round: $ours ($(date +%T))"
        "$RNNLM" bench --model "$ours" --device flex --json --steps "${STEPS:-30}" >> "$OUT/ours.jsonl"
        if [ -n "${BASELINE:-}" ]; then
            "$BASELINE" bench --model "$ours" --device flex --json --steps "${STEPS:-30}" >> "$OUT/baseline.jsonl"
        fi
        for mkldnn in on off; do
            "$PY" "$PEER/d2l_charlm.py" --model "$theirs" --epochs 2 --threads 2 --mkldnn "$mkldnn" \
                --gen-chars 500 --gen-repeats 3 --json "$OUT/peer.$theirs.$mkldnn.$round.json" > /dev/null
        done
    done
done
"$PY" - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
ours = [json.loads(line) for line in open(f"{out}/ours.jsonl")]
roof = float(open(f"{out}/roof.txt").read())
print(f"\nroof (numpy 2048x2048 float32 matmul, this run): {roof:.0f} GFLOP/s")
try:
    base = [json.loads(line) for line in open(f"{out}/baseline.jsonl")]
except FileNotFoundError:
    base = []
pairs = {"rnn-scratch": "rnn_scratch", "gru": "gru", "lstm": "lstm", "deep-lstm": "lstm2"}
print("\n| model | train tok/s, ours | PyTorch | ratio | our GFLOP/s (share of roof) | gen batch 1 chars/s, ours | PyTorch | ratio | ours: gen batch 32 | ours: valid tok/s | ours: peak MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for model, peer in pairs.items():
    mine = [r for r in ours if r["model"] == model]
    theirs = [json.load(open(p)) for p in glob.glob(f"{out}/peer.{peer}.*.json")]
    if not mine or not theirs:
        continue
    med = lambda xs: statistics.median(xs)
    train = med([r["train_tokens_per_s"] for r in mine])
    gflops = med([r["train_gflop_per_s"] for r in mine])
    gen1 = med([r["gen_chars_per_s_batch1"] for r in mine])
    gen32 = med([r["gen_chars_per_s_batch32"] for r in mine])
    valid = med([r["valid_tokens_per_s"] for r in mine])
    # PyTorch's better setting (oneDNN on or off) for each figure, median over rounds.
    best = lambda key: max(med([t[key] if not isinstance(t[key], list) else med(t[key])
                                for t in theirs if t["mkldnn"] == m]) for m in ("on", "off")
                           if any(t["mkldnn"] == m for t in theirs))
    t_train = best("steady_tok_per_s_step_median")
    t_gen = best("gen_chars_per_s_nograd")
    mem = med([r["peak_rss_bytes"] for r in mine]) / 1e6
    print(f"| {model} | {train:.0f} | {t_train:.0f} | {train / t_train:.2f} | {gflops:.0f} ({100 * gflops / roof:.0f} %) | "
          f"{gen1:.0f} | {t_gen:.0f} | {gen1 / t_gen:.2f} | {gen32:.0f} | {valid:.0f} | {mem:.0f} |")
    theirs_base = [r for r in base if r["model"] == model]
    if theirs_base:
        b_train = med([r["train_tokens_per_s"] for r in theirs_base])
        b_gen = med([r["gen_chars_per_s_batch1"] for r in theirs_base])
        b_mem = med([r["peak_rss_bytes"] for r in theirs_base]) / 1e6
        print(f"| {model}, baseline | {b_train:.0f} | {t_train:.0f} | {b_train / t_train:.2f} | | "
              f"{b_gen:.0f} | {t_gen:.0f} | {b_gen / t_gen:.2f} | | | {b_mem:.0f} |")
PY
