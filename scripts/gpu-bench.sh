#!/usr/bin/env bash
# The fused layer on a lent GPU, beside PyTorch's cuDNN, in one prepared run (issue 39).
#
#   scripts/gpu-bench.sh prepare   here: builds a stripped `rnnlm` with wgpu (Vulkan) and, where
#                                  it links, cuda into .gpu/ (git-ignored), with The Time Machine
#                                  and the Vulkan loader's packages (.gl/, as the device tool's
#                                  README says); prints the size the run carries (limit 64 MiB)
#   scripts/gpu-bench.sh run       there (PyTorch with CUDA and cuDNN, no Rust, no network):
#                                  `rnnlm backends`; a fused-against-composite check (one epoch
#                                  of quick.toml each way, the perplexities side by side); then
#                                  training throughput of d2l's models and larger ones, fused,
#                                  composite and PyTorch's nn.RNN/GRU/LSTM on the same GPU, as
#                                  ratios. Everything goes to $OUT (or ./gpu-results).
#
# The device call (about 10 minutes of the 15 a task gets):
#   run(command="bash scripts/gpu-bench.sh run", carry=[".gpu", ".gl"], timeout_s=540)
# Figures go to docs/performance.md with the GPU named (the run prints nvidia-smi's name).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >> .git/info/exclude
    mkdir -p .gpu .gl
    local target=${CARGO_TARGET_DIR:-$HOME/.cache/rnnlm/target-gpu}
    local features=wgpu
    # cuda links against nothing at build time (cudarc loads the driver when it runs); if the
    # build fails here, the run measures wgpu (Vulkan on the NVIDIA driver) alone.
    if CARGO_TARGET_DIR=$target cargo build --release -p rnnlm-cli --no-default-features --features wgpu,cuda; then
        features=wgpu,cuda
    else
        echo "(cuda did not build; wgpu alone)"
        CARGO_TARGET_DIR=$target cargo build --release -p rnnlm-cli --no-default-features --features wgpu
    fi
    cp "$target/release/rnnlm" .gpu/rnnlm
    strip .gpu/rnnlm
    echo "$features" > .gpu/features
    cp "${RNNLM_SHARED_DATA:-../shared/data}/timemachine.txt" .gpu/
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        mkdir -p /tmp/amd64/partial
        local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
        # shellcheck disable=SC2086
        apt-get $o update >/dev/null
        # shellcheck disable=SC2086
        (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    du -sh .gpu .gl
    echo "carried in all: $(du -scb .gpu .gl | tail -1 | cut -f1) bytes (limit 64 MiB with the working tree)"
}

run() {
    local out=${OUT:-gpu-results}
    mkdir -p "$out"
    exec > >(tee "$out/gpu-bench.log") 2>&1
    if ! ldconfig -p | grep -q libvulkan; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
    local bin=.gpu/rnnlm
    local devices=wgpu
    grep -q cuda .gpu/features && devices="cuda wgpu"
    export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
    "$bin" backends

    # Fused against composite on the GPU: one epoch of quick.toml each way, same seed.
    local dev
    for dev in $devices; do
        for fused in on off; do
            rm -rf "$out/run-$dev-$fused"
            CI=true timeout 120 "$bin" train --config configs/quick.toml --data .gpu/timemachine.txt \
                --device "$dev" --fused "$fused" --artifacts "$out/run-$dev-$fused" \
                --set train.epochs=1 --set train.sample_every=0 | grep '^epoch' || echo "$dev fused=$fused: failed"
        done
    done

    # Throughput: d2l's four models at their sizes, then the cuDNN regime (batch >= 32, hidden
    # 256-1024), fused, composite and PyTorch, alternating.
    local shapes=("lstm 256 32" "gru 256 32" "rnn-scratch 512 32" "deep-lstm 256 32"
                  "lstm 512 64" "lstm 1024 64" "gru 1024 64" "lstm 256 128")
    local shape model hidden batch
    for shape in "${shapes[@]}"; do
        read -r model hidden batch <<<"$shape"
        for dev in $devices; do
            for fused in on off; do
                [ "$fused" = off ] && [ "$hidden" -gt 512 ] && continue # minutes per step
                echo "== rnnlm $model H=$hidden B=$batch on $dev, fused $fused"
                timeout 120 "$bin" bench --device "$dev" --model "$model" --hidden "$hidden" \
                    --batch-size "$batch" --only train --fused "$fused" --steps 20 --warmup 5 \
                    | grep -i "train" || echo "(failed or timed out)"
            done
        done
        echo "== pytorch $model H=$hidden B=$batch on cuda"
        timeout 120 python3 scripts/peer_lm.py --model "$model" --hidden "$hidden" --batch-size "$batch" \
            --device cuda --json "$out/peer-$model-$hidden-$batch.json" || echo "(failed)"
    done
}

case ${1:-} in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
