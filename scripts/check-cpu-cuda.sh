#!/usr/bin/env bash
# The backends CI leaves to a developer, for the cost of building them (see the README's
# "Picking a backend"): the cross-backend suite and `rnnlm train` on CubeCL's cpu backend, and a
# type check of cuda (a machine without an NVIDIA GPU can only check it). Both need LLVM 23,
# which scripts/backend-env.sh installs from PyPI.
#
#   scripts/check-cpu-cuda.sh            # both
#   scripts/check-cpu-cuda.sh cpu        # or one of them
#
# Burn compiles once more for each (about 20 minutes for cpu on 2 cores, with its static LLVM).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rnnlm/target}
export RNNLM_SHARED_DATA=${RNNLM_SHARED_DATA:-$PWD/../shared/data}
source scripts/backend-env.sh cpu

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(cpu cuda)
for backend in "${wanted[@]}"; do
    case $backend in
    cpu)
        # Same weights -> same logits, states and clipped step as flex (1e-4); one epoch of
        # `rnnlm train` on a small model (CubeCL's JIT-compiled kernels are slow on a CPU).
        cargo test --release -p rnnlm-tests -p rnnlm-cli \
            --features rnnlm-tests/cpu,rnnlm-cli/cpu --test backends -- --nocapture
        ;;
    cuda)
        # Its build scripts compile against LLVM's headers; linking would need LLVM's NVPTX
        # target, which the PyPI LLVM lacks (tracel's own download, from GitHub, has it).
        cargo check -p rnnlm-cli -p rnnlm-tests --tests --features rnnlm-cli/cuda,rnnlm-tests/cuda
        ;;
    *)
        echo "check-cpu-cuda: unknown backend '$backend' (choose cpu or cuda)" >&2
        exit 1
        ;;
    esac
done
