#!/usr/bin/env bash
# The fused layer on a lent GPU, beside PyTorch's cuDNN, in one prepared run (issue 39).
#
#   scripts/gpu-bench.sh prepare   here: builds a stripped `rnnlm` with wgpu (Vulkan) and, with
#                                  GPU_BENCH_CUDA=1, cuda into .gpu/ (git-ignored), with The Time Machine
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
#   run(command="bash scripts/gpu-bench.sh run", carry=[".gpu", ".gl"], timeout_s=480)
# (about 2 + 8 x 3 runs of at most a minute each; on a GPU most take seconds)
# Figures go to docs/performance.md with the GPU named (the run prints nvidia-smi's name).
set -euo pipefail
cd "$(dirname "$0")/.."

prepare() {
    mkdir -p .git/info
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >> .git/info/exclude
    mkdir -p .gpu .gl
    local target=${CARGO_TARGET_DIR:-$HOME/.cache/rnnlm/target-wgpu}
    local features=wgpu
    # cuda links only against LLVM's NVPTX target, which only tracel's download of LLVM has
    # (README, "Picking a backend"): asked for with GPU_BENCH_CUDA=1 where that LLVM is
    # installed; the run then measures cuda, else wgpu (Vulkan on the NVIDIA driver).
    if [ "${GPU_BENCH_CUDA:-0}" = 1 ]; then
        features=wgpu,cuda
    fi
    cargo build --release -p rnnlm-cli --features "$features" --target-dir "$target"
    # Stripped, it is about 74 MiB, over what a run carries (64 MiB with the working tree):
    # carried xz-compressed (about 12 MiB), unpacked there by Python's lzma.
    cp "$target/release/rnnlm" .gpu/rnnlm
    strip .gpu/rnnlm
    xz -6 -f -T1 .gpu/rnnlm
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
    if ! ldconfig -p | grep -q libvulkan && ls .gl/*.deb >/dev/null 2>&1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    "${PYTHON:-python3}" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version() if torch.cuda.is_available() else None)' || true
    if [ -z "${GPU_BENCH_BIN:-}" ] && [ -e .gpu/rnnlm.xz ]; then
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(".gpu/rnnlm.xz"), open("/tmp/rnnlm", "wb"))'
        chmod +x /tmp/rnnlm
    fi
    local bin=${GPU_BENCH_BIN:-/tmp/rnnlm}
    # The backend measured: cuda where the binary has it, else wgpu (Vulkan on the NVIDIA driver).
    # GPU_BENCH_DEVICE, PEER_DEVICE and SHAPES override, for a dry run on a CPU:
    #   GPU_BENCH_BIN=target/release/rnnlm GPU_BENCH_DEVICE=flex PEER_DEVICE=cpu SHAPES="lstm 64 8" \
    #   GPU_BENCH_DATA=../shared/data/timemachine.txt PYTHON=<a python with torch> \
    #   OUT=/tmp/dry scripts/gpu-bench.sh run
    local dev=wgpu
    grep -qs cuda .gpu/features && dev=cuda
    dev=${GPU_BENCH_DEVICE:-$dev}
    local peer_device=${PEER_DEVICE:-cuda}
    export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
    "$bin" backends

    # Fused against composite on the GPU: one epoch of quick.toml each way, same seed; the
    # perplexities must agree to float rounding.
    local fused
    for fused in on off; do
        rm -rf "$out/run-$fused"
        CI=true timeout 90 "$bin" train --config configs/quick.toml --data "${GPU_BENCH_DATA:-.gpu/timemachine.txt}" \
            --device "$dev" --fused "$fused" --artifacts "$out/run-$fused" \
            --set train.epochs=1 --set train.sample_every=0 | grep '^epoch' || echo "$dev fused=$fused: failed"
    done

    # Throughput: d2l's four models at their sizes, then the cuDNN regime (batch >= 32, hidden
    # 256-1024): fused, composite (up to hidden 512: beyond, minutes) and PyTorch, one after
    # the other per shape. `rnnlm bench --json` lines and the peer's JSON go to $OUT.
    local shapes=("lstm 256 32" "gru 256 32" "rnn-scratch 512 32" "deep-lstm 256 32"
                  "lstm 512 64" "lstm 1024 64" "gru 1024 64" "lstm 256 128")
    if [ -n "${SHAPES:-}" ]; then IFS=';' read -r -a shapes <<<"$SHAPES"; fi
    local shape model hidden batch
    for shape in "${shapes[@]}"; do
        read -r model hidden batch <<<"$shape"
        for fused in on off; do
            [ "$fused" = off ] && [ "$hidden" -gt 512 ] && continue
            echo "== rnnlm $model H=$hidden B=$batch on $dev, fused $fused"
            timeout 60 "$bin" bench --device "$dev" --model "$model" --hidden "$hidden" --batch-size "$batch" \
                --only train --fused "$fused" --steps 10 --warmup 3 --json \
                | tee -a "$out/rnnlm.jsonl" | grep '^{' || echo "(failed or timed out)"
        done
        echo "== pytorch $model H=$hidden B=$batch on $peer_device"
        timeout 60 "${PYTHON:-python3}" scripts/peer_lm.py --model "$model" --hidden "$hidden" --batch-size "$batch" \
            --device "$peer_device" --json "$out/peer-$model-$hidden-$batch.json" || echo "(failed)"
    done
    # The ratios, one line per shape.
    python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "rnnlm.jsonl")) if l.startswith("{")]
print(f"{'model':12} {'H':>5} {'B':>4} {'fused':>10} {'composite':>10} {'cuDNN':>10} {'vs cuDNN':>9} {'vs comp.':>9}")
for peer in sorted(glob.glob(os.path.join(out, "peer-*.json"))):
    p = json.load(open(peer))
    def ours(fused):
        for r in rows:
            if r["model"] == p["model"] and r["hidden_size"] == p["hidden"] and r["batch_size"] == p["batch_size"] and r["fused"] == fused:
                return r["train_tokens_per_s"]
    on, off, ref = ours(True), ours(False), p["tokens_per_s"]
    fmt = lambda v: f"{v:10.0f}" if v else f"{'-':>10}"
    print(f"{p['model']:12} {p['hidden']:5} {p['batch_size']:4} {fmt(on)} {fmt(off)} {fmt(ref)} "
          f"{(on / ref if on else 0):8.2f}x {(on / off if on and off else 0):8.2f}x")
PY
}

case ${1:-} in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
