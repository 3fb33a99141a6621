#!/usr/bin/env bash
# The fused layer on a CubeCL backend against the same backend's per-step tensor operations
# (`--fused off`), alternating in one run: d2l's four models and the primer's classifiers,
# training throughput, medians over the rounds and their ratio.
# Usage: [DEVICE=wgpu] [MODELS="lstm gru"] [CLASSIFIERS="lstm-256"] scripts/bench-cube.sh [ROUNDS]
#   (a release build with the backend: cargo build --release -p rnnlm-cli --features wgpu;
#   on a machine without a GPU, wgpu runs on lavapipe: source scripts/backend-env.sh wgpu)
# Runs in its own session with a lowered autogroup nice so it gets the CPU on a shared machine.
set -euo pipefail
if [ -z "${BENCH_IN_SESSION:-}" ]; then
    BENCH_IN_SESSION=1 exec setsid "$0" "$@"
fi
echo -15 > /proc/self/autogroup 2>/dev/null || echo "(could not lower the autogroup nice; timings may be shared)"
cd "$(dirname "$0")/.."
rounds=${1:-2}
device=${DEVICE:-wgpu}
bin=${RNNLM_BIN:-${CARGO_TARGET_DIR:-target}/release/rnnlm}
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The training tokens/s (or samples/s) of one run, from `rnnlm bench --json`.
figure() {
    python3 -c 'import json, sys
rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]
row = rows[-1]
print(row.get("train_tokens_per_s") or row.get("samples_per_s") or row.get("train_samples_per_s"))'
}
cases=()
for model in ${MODELS:-rnn-scratch gru lstm deep-lstm}; do cases+=("--model $model --only train"); done
for case in ${CLASSIFIERS:-lstm-256 gru-256 bilstm-256-packed}; do cases+=("--classifier $case"); done
for round in $(seq "$rounds"); do
    for case in "${cases[@]}"; do
        for fused in on off; do
            # shellcheck disable=SC2086
            value=$("$bin" bench --device "$device" $case --fused "$fused" --steps "${STEPS:-10}" --warmup 2 --json \
                    2>/dev/null | figure)
            echo "$case|$fused|$value" | tee -a "$work/rows"
        done
    done
done
python3 - "$work/rows" "$device" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    case, fused, value = line.rstrip("\n").split("|")
    rows.setdefault(case, {}).setdefault(fused, []).append(float(value))
print(f"\n{sys.argv[2]}: training throughput, medians (tokens/s for the language models, samples/s for the classifiers)")
print(f"{'case':40} {'fused':>10} {'--fused off':>12} {'ratio':>7}")
for case, by in rows.items():
    on, off = statistics.median(by["on"]), statistics.median(by["off"])
    print(f"{case:40} {on:10.1f} {off:12.1f} {on / off:6.2f}x")
EOF
