#!/usr/bin/env bash
# Training throughput of the backends, alternating, in one run.
# Usage: [DEVICES="flex ndarray wgpu"] [MODELS="gru128"] scripts/compare-backends.sh [ROUNDS]
#   (needs a build with those backends, e.g.
#   cargo build --release -p rnnlm-cli --no-default-features --features flex,ndarray,wgpu)
# Runs in its own session with a lowered autogroup nice so it gets the CPU on a shared machine.
set -euo pipefail
if [ -z "${COMPARE_IN_SESSION:-}" ]; then
    COMPARE_IN_SESSION=1 exec setsid "$0" "$@"
fi
echo -15 > /proc/self/autogroup 2>/dev/null || echo "(could not lower the autogroup nice; timings may be shared)"
cd "$(dirname "$0")/.."
rounds=${1:-2}
bin=${CARGO_TARGET_DIR:-target}/release/rnnlm
data=${RNNLM_DATA:-../shared/data/timemachine.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
    for device in ${DEVICES:-flex ndarray}; do
        for model in ${MODELS:-gru128 lstm2x256}; do
            case $model in
                gru128) sets=(--set train.epochs=2) ;;
                lstm2x256) sets=(--set train.epochs=1 --set model.kind=lstm --set model.num_layers=2
                                 --set model.hidden_size=256 --set data.max_tokens=40000) ;;
            esac
            rm -rf "$work/run"
            line=$(CI=true "$bin" train --config configs/quick.toml --data "$data" --artifacts "$work/run" \
                   --device "$device" --set train.sample_every=0 "${sets[@]}" | grep '^epoch' | tail -1)
            echo "round $round $device $model: $line"
        done
    done
done
