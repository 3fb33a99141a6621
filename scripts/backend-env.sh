# Installs what the non-default backends need on a CPU-only Debian/Ubuntu machine and exports
# the variables their builds and runs read. Idempotent: what is installed already is kept.
#
#   source scripts/backend-env.sh wgpu tch cpu     # any subset, in any order
#
# wgpu: Mesa's Vulkan CPU driver (lavapipe) from apt. Without it wgpu falls back to a GL adapter
#       on which burn's reductions panic, so this fails unless `vulkaninfo` shows llvmpipe.
# tch:  LibTorch 2.9.0 (the version torch-sys 0.22 pins) from PyPI's torch wheel. That wheel is
#       the CUDA build and pulls 4 GB of CUDA maths libraries; only libtorch_cpu, libc10 and the
#       CUDA runtime and CUPTI (which libtorch_cpu links) are needed to run on a CPU, so it installs
#       those three wheels without dependencies (0.9 GB) and points LIBTORCH at a view of the
#       CPU libraries. A stub libtorch.so satisfies torch-sys' `-ltorch` without pulling
#       libtorch_cuda. Binaries built with tch need LD_LIBRARY_PATH (exported here) at run time.
#       For Python (`import torch`, as scripts/check_export.py runs it) it adds torch's pure-Python
#       dependencies and empty stand-ins for the CUDA libraries, and exports RNNLM_TORCH_PYTHON.
# cpu:  CubeCL's CPU runtime links a static LLVM 23. Its build script downloads one from GitHub,
#       which registries-only machines cannot reach; PyPI's mlc-llvm-static is a relocatable static
#       LLVM 23 with an llvm-config, placed where the build script looks, with its "installed"
#       marker so no download is tried.
#
# RNNLM_TOOLS (default ~/.cache/rnnlm) holds the Python environments (LibTorch, LLVM) and the
# downloaded Mesa packages.

rnnlm_backend_env() {
    local tools=${RNNLM_TOOLS:-$HOME/.cache/rnnlm}
    local backend
    mkdir -p "$tools" || return 1
    for backend in "$@"; do
        case $backend in
        wgpu)
            if ! command -v vulkaninfo >/dev/null || ! vulkaninfo --summary 2>/dev/null | grep -q llvmpipe; then
                # The packages are kept under $tools/apt, so a machine that keeps its home but
                # not its system installs them again without downloading them.
                mkdir -p "$tools/apt/partial" &&
                    apt-get update &&
                    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                        -o Dir::Cache::archives="$tools/apt" \
                        mesa-vulkan-drivers libvulkan1 vulkan-tools || return 1
            fi
            vulkaninfo --summary 2>/dev/null | grep -q llvmpipe ||
                { echo "backend-env: no Vulkan CPU device (lavapipe) after installing mesa-vulkan-drivers" >&2; return 1; }
            # Kernels are compiled and tuned on first use; on a CPU "GPU" tuning costs more than it wins.
            export CUBECL_AUTOTUNE_LEVEL=minimal
            if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
                export XDG_RUNTIME_DIR=$tools/xdg-runtime
                mkdir -p -m 700 "$XDG_RUNTIME_DIR"
            fi
            ;;
        tch)
            local venv=$tools/torch-slim
            local site=$venv/lib/python3.11/site-packages
            if [ ! -f "$venv/.complete" ]; then
                python3 -m venv "$venv" &&
                    "$venv/bin/pip" install --quiet --no-deps torch==2.9.0 \
                        nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90 || return 1
                touch "$venv/.complete"
            fi
            site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
            local view=$tools/libtorch-cpu
            mkdir -p "$view/lib"
            # Links are remade only when they point elsewhere, so the build scripts that watch
            # these paths see nothing new on a warm machine.
            [ "$(readlink "$view/include")" = "$site/torch/include" ] || ln -sfn "$site/torch/include" "$view/include"
            local lib
            for lib in libtorch_cpu.so libc10.so libgomp.so.1; do
                [ "$(readlink "$view/lib/$lib")" = "$site/torch/lib/$lib" ] || ln -sfn "$site/torch/lib/$lib" "$view/lib/$lib"
            done
            if [ ! -f "$view/lib/libtorch.so" ]; then
                echo 'void rnnlm_libtorch_stub(void) {}' > "$view/stub.c" &&
                    cc -shared -fPIC -o "$view/lib/libtorch.so" "$view/stub.c" || return 1
            fi
            export LIBTORCH=$view
            export LD_LIBRARY_PATH=$site/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            # Python's `import torch` (scripts/check_export.py, the export test): torch's
            # pure-Python dependencies, pinned, and stand-ins for the CUDA libraries torch._C
            # links but never calls on a CPU (scripts/torch_cuda_stubs.py), found through a
            # wrapper so that nothing else sees them. Its own marker, so a venv made before
            # this step gets it too.
            if [ ! -f "$venv/.python-complete" ]; then
                "$venv/bin/pip" install --quiet --no-deps typing-extensions==4.15.0 filelock==3.20.0 \
                    sympy==1.14.0 mpmath==1.3.0 networkx==3.5 jinja2==3.1.6 markupsafe==3.0.3 \
                    fsspec==2025.9.0 packaging==25.0 safetensors==0.6.2 &&
                    "$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/torch_cuda_stubs.py" "$site" "$venv/cuda-stubs" &&
                    printf '#!/bin/sh\n# Python with torch on a CPU: the CUDA libraries torch links are stubs (scripts/backend-env.sh).\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
                        "$venv/cuda-stubs" "$venv/bin/python" > "$venv/bin/python-cpu" &&
                    chmod +x "$venv/bin/python-cpu" &&
                    "$venv/bin/python-cpu" -W ignore -c 'import torch, safetensors.torch' || return 1
                touch "$venv/.python-complete"
            fi
            export RNNLM_TORCH_PYTHON=$venv/bin/python-cpu
            ;;
        cpu)
            local venv=$tools/mlc-llvm
            if [ ! -f "$venv/.complete" ]; then
                python3 -m venv "$venv" &&
                    "$venv/bin/pip" install --quiet mlc-llvm-static==23.1.1.post0 || return 1
                touch "$venv/.complete"
            fi
            local llvm
            llvm=$("$venv/bin/python" -c 'import mlc_llvm_static, os; print(os.path.join(os.path.dirname(mlc_llvm_static.__file__), "static"))') || return 1
            # The directory tracel-llvm-bundler 23.1.0-4 (cubecl-llvm's build dependency) reads.
            local target=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
            mkdir -p "$(dirname "$target")"
            [ "$(readlink "$target")" = "$llvm" ] || ln -sfn "$llvm" "$target"
            # The bundler's build script reruns when this marker changes, and everything above
            # cubecl-llvm rebuilds after it (half an hour here): create it once, never touch it.
            [ -e "$target/.tracel-llvm-installed" ] || touch "$target/.tracel-llvm-installed"
            "$target/bin/llvm-config" --version >/dev/null ||
                { echo "backend-env: $target/bin/llvm-config does not run (it needs python3 on PATH)" >&2; return 1; }
            ;;
        flex | ndarray | cuda) ;; # nothing to install (cuda loads the driver at run time)
        *)
            echo "backend-env: unknown backend '$backend' (choose from wgpu, tch, cpu, flex, ndarray, cuda)" >&2
            return 1
            ;;
        esac
    done
}

rnnlm_backend_env "$@"
