#!/usr/bin/env bash
# Corpora of any size: how preparation and training scale with the corpus. For each size, a corpus
# made by repeating The Time Machine and tinyshakespeare until it is that large (raw text, so
# every byte is a character), then:
#   - `rnnlm prepare`: seconds, MB/s of corpus, peak anonymous memory (RssAnon, sampled every
#     20 ms from /proc: the mapped and cached file pages are the page cache's, not the process's);
#   - `rnnlm train` on the prepared corpus for MAX_STEPS minibatches (train.max_steps) of
#     CONFIG: seconds from the start to the first minibatch (the trainer prints it), peak RssAnon;
# and the same training on The Time Machine alone, the reference the memory is compared with.
#
#   bash scripts/data-scale.sh [OUTDIR]
#
# SIZES (MB, default "10 100 1000"; add 5000 where the disk has ~12 GB free), PREPROCESS (default
# raw: every byte a character, as enwik8 is read), CONFIG (default
# configs/quick.toml), MAX_STEPS (default 100), RNNLM (default target/release/rnnlm). The
# corpora and the prepared files go to OUTDIR (default a new temporary directory), removed
# size by size unless KEEP=1. Runs in its own session with autogroup nice -15.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${RNNLM_SHARED_DATA:-$ROOT/../shared/data}
OUT=${1:-$(mktemp -d)}
RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
SIZES=${SIZES:-"10 100 1000"}
PREPROCESS=${PREPROCESS:-raw}
CONFIG=${CONFIG:-$ROOT/configs/quick.toml}
MAX_STEPS=${MAX_STEPS:-100}
[ -x "$RNNLM" ] || { echo "build first: cargo build --release -p rnnlm-cli"; exit 1; }
mkdir -p "$OUT"
echo "results in $OUT; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

# Runs a command, sampling its RssAnon; prints "<seconds> <peak RssAnon kB>" to the file $1 and
# the command's output to $2.
measure() {
    local stats=$1 log=$2; shift 2
    local start end peak=0 kb
    start=$(date +%s.%N)
    "$@" > "$log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        kb=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
        sleep 0.02
    done
    wait "$pid" || { echo "failed: $*"; cat "$log"; exit 1; }
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | bc) $peak" > "$stats"
}

# A corpus of $1 MB: the two books, raw, repeated.
make_corpus() {
    local mb=$1 file=$2
    local target=$((mb * 1000 * 1000))
    cat "$DATA/timemachine.txt" "$DATA/tinyshakespeare.txt" > "$file.unit"
    : > "$file"
    # Doubling keeps this to a few dozen appends even for gigabytes.
    cp "$file.unit" "$file"
    while [ "$(stat -c %s "$file")" -lt "$target" ]; do
        cat "$file" "$file" > "$file.next" && mv "$file.next" "$file"
    done
    truncate -s "$target" "$file"
    rm -f "$file.unit"
}

train_args=(--config "$CONFIG" --set "train.max_steps=$MAX_STEPS" --set train.sample_every=0
            --set data.preprocess=$PREPROCESS --set train.epochs=1)

table=$OUT/table.md
: > "$table"
row() { printf '| %-12s | %10s | %8s | %10s | %14s | %12s | %13s |\n' "$@" | tee -a "$table"; }
row "corpus" "prepare s" "MB/s" "prep. anon" "first batch s" "train anon" "vs. reference"
row "---" "---" "---" "---" "---" "---" "---"

# The reference: The Time Machine alone, prepared and trained the same way.
ref=$OUT/ref
mkdir -p "$ref"
measure "$ref/prep.stats" "$ref/prep.log" "$RNNLM" prepare --config "$CONFIG" --data "$DATA/timemachine.txt" \
    --set data.preprocess=$PREPROCESS --cache-dir "$ref/cache"
measure "$ref/train.stats" "$ref/train.log" env CI=true "$RNNLM" train "${train_args[@]}" \
    --data "$DATA/timemachine.txt" --artifacts "$ref/run" --cache-dir "$ref/cache"
read -r _ ref_anon < "$ref/train.stats"
ref_first=$(grep -o 'first minibatch done [0-9.]* s' "$ref/train.log" | awk '{print $4}')
row "Time Machine" "-" "-" "-" "$ref_first" "$((ref_anon / 1024)) MB" "1.00"

for mb in $SIZES; do
    dir=$OUT/$mb
    mkdir -p "$dir"
    corpus=$dir/corpus.txt
    echo "making a $mb MB corpus"
    make_corpus "$mb" "$corpus"
    sync
    measure "$dir/prep.stats" "$dir/prep.log" "$RNNLM" prepare --config "$CONFIG" --data "$corpus" \
        --set data.preprocess=$PREPROCESS --cache-dir "$dir/cache"
    read -r prep_s prep_anon < "$dir/prep.stats"
    measure "$dir/train.stats" "$dir/train.log" env CI=true "$RNNLM" train "${train_args[@]}" \
        --data "$corpus" --artifacts "$dir/run" --cache-dir "$dir/cache"
    read -r _ train_anon < "$dir/train.stats"
    grep -q "data: reusing" "$dir/train.log" || { echo "train did not reuse the prepared file"; cat "$dir/train.log"; exit 1; }
    first=$(grep -o 'first minibatch done [0-9.]* s' "$dir/train.log" | awk '{print $4}')
    rate=$(echo "scale=0; $mb / $prep_s" | bc)
    ratio=$(echo "scale=2; $train_anon / $ref_anon" | bc)
    row "$mb MB" "$(printf %.1f "$prep_s")" "$rate" "$((prep_anon / 1024)) MB" "$first" "$((train_anon / 1024)) MB" "$ratio"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$corpus" "$dir/cache"
done
echo
cat "$table"
