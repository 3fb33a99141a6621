#!/usr/bin/env bash
# The measurements behind docs/scale.md: what data parallelism across MPI ranks costs and gives.
#
#   bash scripts/scale.sh [OUTDIR]
#
# 1. For d2l's four models and best-10min.toml's LSTM 2x512: one process and `mpirun -n 2`, each
#    process at 1 thread (RNNLM_THREADS=1, RAYON_NUM_THREADS=1), train.max_steps = A then B
#    minibatches; (time(B) - time(A)) / (B - A) is a step without the start-up. Each run prints
#    the all-reduce's milliseconds a step and its bytes.
# 2. One process at 1 thread with ROWS streams per minibatch (a rank's share when N ranks split
#    32 streams): seconds a step, the compute side of the model of N machines.
# 3. Perplexity per epoch with a global batch of 32, 64 and 128 streams (1, 2 and 4 ranks' worth
#    at 32 each) on configs/gru.toml for EPOCHS epochs: what weak scaling does to convergence.
#
# Needs an rnnlm built with MPI (cargo build --release -p rnnlm-cli --features mpi; RNNLM=path)
# and OpenMPI's mpirun. Runs in its own session with autogroup nice -15.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${RNNLM_SHARED_DATA:-$ROOT/../shared/data}
OUT=${1:-$(mktemp -d)}
RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
A=${A:-10}
B=${B:-90}
ROWS=${ROWS:-"32 16 8 4 2 1"}
EPOCHS=${EPOCHS:-10}
MODELS=${MODELS:-"rnn-scratch gru lstm deep-lstm best-10min"}
# PARTS: which of 1, 2 and 3 to run (default all).
PARTS=${PARTS:-"1 2 3"}
[ -x "$RNNLM" ] || { echo "build first: cargo build --release -p rnnlm-cli --features mpi"; exit 1; }
command -v mpirun >/dev/null || { echo "mpirun not found (Debian: openmpi-bin)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 CI=true
export RNNLM_THREADS=1 RAYON_NUM_THREADS=1
mkdir -p "$OUT"
echo "results in $OUT; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load $(cut -d' ' -f1-3 /proc/loadavg)"

# Seconds of one run of `$@` (rnnlm's arguments), its output in $OUT/$name.log.
timed() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$@" > "$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

common=(--data "$DATA/timemachine.txt" --cache-dir "$OUT/cache" --set train.sample_every=0
        --set train.epochs=1000)

part() { [[ " $PARTS " == *" $1 "* ]]; }

if part 1; then
echo
echo "## 1. a step on 1 and 2 ranks, 1 thread each"
printf '| %-11s | %9s | %9s | %9s | %12s | %10s | %9s |\n' model "params" "1 rank ms" "2 ranks ms" "all-reduce ms" "share" "speed-up"
printf '| %-11s | %9s | %9s | %9s | %12s | %10s | %9s |\n' --- --- --- --- --- --- ---
for model in $MODELS; do
    per_step=()
    for ranks in 1 2; do
        launch=("$RNNLM")
        [ "$ranks" = 1 ] || launch=(mpirun --oversubscribe -n "$ranks" "$RNNLM")
        seconds=()
        for steps in "$A" "$B"; do
            name="$model-$ranks-$steps"
            rm -rf "$OUT/run-$name"
            seconds+=("$(timed "$name" "${launch[@]}" train --config "$ROOT/configs/$model.toml" "${common[@]}" \
                --set "train.max_steps=$steps" --artifacts "$OUT/run-$name")")
        done
        per_step+=("$(echo "scale=2; 1000 * (${seconds[1]} - ${seconds[0]}) / ($B - $A)" | bc)")
    done
    reduce=$(grep -o 'all-reduce: [0-9]* steps, [0-9.]* ms a step on average, [0-9.]* kB' "$OUT/$model-2-$B.log")
    reduce_ms=$(awk '{print $4}' <<<"$reduce")
    kb=$(awk '{print $10}' <<<"$reduce")
    share=$(echo "scale=1; 100 * $reduce_ms / ${per_step[1]}" | bc)
    speedup=$(echo "scale=2; ${per_step[0]} / ${per_step[1]}" | bc)
    printf '| %-11s | %7s kB | %9s | %9s | %12s | %8s %% | %9s |\n' "$model" "$kb" "${per_step[0]}" "${per_step[1]}" "$reduce_ms" "$share" "$speedup"
done

fi

if part 2; then
echo
echo "## 2. a step on one process, 1 thread, by streams per minibatch"
printf '| %-11s |' model; for rows in $ROWS; do printf ' %7s |' "$rows"; done; echo
printf '| %-11s |' ---; for rows in $ROWS; do printf ' %7s |' ---; done; echo
for model in $MODELS; do
    printf '| %-11s |' "$model"
    for rows in $ROWS; do
        seconds=()
        for steps in "$A" "$B"; do
            name="$model-rows$rows-$steps"
            rm -rf "$OUT/run-$name"
            seconds+=("$(timed "$name" "$RNNLM" train --config "$ROOT/configs/$model.toml" "${common[@]}" \
                --set "data.batch_size=$rows" --set "train.max_steps=$steps" --artifacts "$OUT/run-$name")")
        done
        printf ' %7s |' "$(echo "scale=2; 1000 * (${seconds[1]} - ${seconds[0]}) / ($B - $A)" | bc)"
    done
    echo
done

fi

if part 3; then
echo
echo "## 3. validation perplexity per epoch by global batch (configs/gru.toml on the whole book, its last 10 % held out, $EPOCHS epochs)"
unset RNNLM_THREADS RAYON_NUM_THREADS
for batch in 32 64 128; do
    name="gru-batch$batch"
    rm -rf "$OUT/run-$name"
    timed "$name" "$RNNLM" train --config "$ROOT/configs/gru.toml" --data "$DATA/timemachine.txt" \
        --cache-dir "$OUT/cache" --set train.sample_every=0 --set "train.epochs=$EPOCHS" \
        --set data.max_tokens=0 --set data.valid_fraction=0.1 --set "data.batch_size=$batch" \
        --artifacts "$OUT/run-$name" > /dev/null
    printf 'batch %3s:' "$batch"
    awk -F, 'NR > 1 { printf " %.3f", $3 }' "$OUT/run-$name/metrics.csv"
    echo
done
fi
