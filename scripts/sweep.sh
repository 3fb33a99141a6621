#!/usr/bin/env bash
# Training speed across model sizes: `rnnlm bench` against the PyTorch reference
# (../shared/peers/pytorch) at every point of a grid, alternating in one run, with the roof (the
# best 2048 x 2048 float32 product of the gemm crate and of rnnlm-kernels) measured in the same
# run. Writes sweep.csv, sweep.md (the table) and sweep.svg (tokens/s against hidden size) to
# OUTDIR; the work is in scripts/sweep.py.
#
#   bash scripts/sweep.sh [OUTDIR]
#
# The grid (environment): CELLS (default "rnn gru lstm"), HIDDEN ("128 256 512 1024 2048"),
# BATCHES ("1 8 32 128"), LAYERS ("1 2"), 35 steps, and EXTRA points cell:hidden:batch:layers:steps
# (default a 3-layer and a 200-step LSTM 512); ROUNDS (3). The estimated time is printed first,
# and a grid over BUDGET_MINUTES (240) is refused. Needs a built `target/release/rnnlm` (or
# RNNLM=path) and the reference's Python with torch (PY=path; matplotlib for the plot). Runs in
# its own session with autogroup nice -15, as the other benchmarks do.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PEER=${PEER:-$ROOT/../shared/peers/pytorch}
OUT=${1:-$(mktemp -d)}
export RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
require_python_and_rnnlm
[ -f "$PEER/d2l_charlm.py" ] || echo "warning: no PyTorch reference at $PEER: its columns stay empty"
export PY
mkdir -p "$OUT"
echo "autogroup $(cat /proc/self/autogroup 2>/dev/null); results in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$ROOT/scripts/sweep.py" "$OUT"
