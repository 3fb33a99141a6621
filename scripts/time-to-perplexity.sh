#!/usr/bin/env bash
# The best held-out perplexity each side reaches in the same wall-clock time: rnnlm and the PyTorch
# reference (../shared/peers/pytorch, d2l_charlm.py --max-seconds) trained alternately on the same
# split, with the same model and hyper-parameters (d2l's: SGD, global-norm clipping 1, batch 32 x 35
# steps, sequential minibatches), each stopping after the epoch that crosses the budget. Both are
# then scored by `rnnlm eval` on the same held-out test text (the PyTorch model through `rnnlm
# import`), so the figures come from one evaluation: PyTorch's last model, ours last and ours best
# (model-best.bpk, chosen on a validation part of the training text that neither side trains on;
# the test text chooses nothing).
#
#   bash scripts/time-to-perplexity.sh [OUTDIR]
#
# BUDGETS (minutes, default "1 3 10"), MODELS (ours:theirs:config[:epochs], default the 2-layer
# LSTM 256 and the GRU 256; rows are named by ours; theirs "-" runs no PyTorch model, e.g. for
# configs/best-10min.toml, which has no counterpart there; epochs "config" keeps the config's own
# epochs, which a schedule over the run needs, where otherwise only the budget stops the run), CORPORA (timemachine, timemachine+shakespeare; default both), MKLDNN (PyTorch's
# oneDNN settings to run, default "on off"; the better figure is kept). The split: the corpora
# cleaned as d2l does (d2l-lines), one after the other, each holding out its last 10 % for the
# test and the 5 % before that for validation. Needs a
# built `target/release/rnnlm` (or RNNLM=path) and the reference's Python with torch (PY=path;
# matplotlib for the plot). Runs in its own session with autogroup nice -15, as the benchmarks do.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
run_in_own_session "$@"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/../shared/peers/pytorch}
DATA=${RNNLM_SHARED_DATA:-$ROOT/../shared/data}
OUT=${1:-$(mktemp -d)}
RNNLM=${RNNLM:-$ROOT/target/release/rnnlm}
BUDGETS=${BUDGETS:-"1 3 10"}
MODELS=${MODELS:-"lstm2:lstm2:configs/deep-lstm.toml gru:gru:configs/gru.toml"}
CORPORA=${CORPORA:-"timemachine timemachine+shakespeare"}
MKLDNN=${MKLDNN:-"on off"}
require_python_and_rnnlm
mkdir -p "$OUT"
echo "autogroup $(cat /proc/self/autogroup 2>/dev/null); results in $OUT; load $(cut -d' ' -f1-3 /proc/loadavg)"

# The split, once per corpus: d2l-lines cleaning (letters and spaces, lowercase, lines joined),
# then every text's last 10 % for the test and the 5 % before it for validation. Both sides read
# the cleaned text, which cleans to itself.
split() {
    local name=$1 dir=$OUT/$1
    mkdir -p "$dir"
    local files=("$DATA/timemachine.txt")
    [[ $name == *shakespeare* ]] && files+=("$DATA/tinyshakespeare.txt")
    "$PY" - "$dir" "${files[@]}" <<'SPLIT'
import re, sys
out, files = sys.argv[1], sys.argv[2:]
train, valid, test = [], [], []
for path in files:
    with open(path, encoding="utf-8") as f:
        text = "".join(re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in f)
    test_at = len(text) - round(len(text) * 0.1)
    valid_at = test_at - round(len(text) * 0.05)
    train.append(text[:valid_at]); valid.append(text[valid_at:test_at]); test.append(text[test_at:])
for name, parts in (("train", train), ("valid", valid), ("test", test)):
    with open(f"{out}/{name}.txt", "w", encoding="utf-8") as f:
        f.write(" ".join(p.strip() for p in parts))
SPLIT
}

# `perplexity P, B bits` of a checkpoint's model $3 (best or last) on the test text.
score() {
    "$RNNLM" eval --checkpoint "$1" --which "$3" --data "$2" --streams 32 \
        | sed -n 's/.*perplexity \([0-9.]*\), \([0-9.]*\) bits.*/\1 \2/p' | head -1
}

echo "corpus,model,side,budget_min,seconds,epochs,perplexity,bits" > "$OUT/results.csv"
for corpus in $CORPORA; do
    split "$corpus"
    train=$OUT/$corpus/train.txt valid=$OUT/$corpus/valid.txt test=$OUT/$corpus/test.txt
    for budget in $BUDGETS; do
        for spec in $MODELS; do
            IFS=: read -r ours theirs config epochs <<< "$spec"
            epochs_set=(--set train.epochs=100000)
            [ "${epochs:-}" = config ] && epochs_set=()
            run=$OUT/$corpus/ours-$ours-$budget
            echo "=== $corpus, $ours, $budget min: rnnlm ($(date +%T))"
            rm -rf "$run"
            started=$(date +%s.%N)
            case $config in /*) ;; *) config=$ROOT/$config ;; esac
            "$RNNLM" train --config "$config" --data "$train" --artifacts "$run" \
                --max-minutes "$budget" "${epochs_set[@]}" --set data.max_tokens=0 \
                --set data.valid_fraction=0 --set "data.valid_files=[\"$valid\"]" \
                --set train.sample_every=0 > "$run.log" 2>&1 || { echo "rnnlm failed: $run.log"; exit 1; }
            seconds=$(awk "BEGIN { print $(date +%s.%N) - $started }")
            epochs=$(($(wc -l < "$run/metrics.csv") - 1))
            for which in last best; do
                echo "$corpus,$ours,rnnlm-$which,$budget,$seconds,$epochs,$(score "$run" "$test" "$which" | tr ' ' ',')" >> "$OUT/results.csv"
            done
            [ "$theirs" = - ] && continue
            for mkldnn in $MKLDNN; do
                peer=$OUT/$corpus/peer-$theirs-$budget-$mkldnn
                echo "=== $corpus, $theirs, $budget min: PyTorch, oneDNN $mkldnn ($(date +%T))"
                rm -rf "$peer" && mkdir -p "$peer"
                started=$(date +%s.%N)
                "$PY" "$PEER/d2l_charlm.py" --model "$theirs" --data "$train" --epochs 100000 \
                    --max-seconds "$(awk "BEGIN { print $budget * 60 }")" --threads 2 --mkldnn "$mkldnn" --gen-chars 10 \
                    --gen-repeats 1 --json "$peer/summary.json" --save "$peer/model.pt" > "$peer.log" 2>&1 \
                    || { echo "PyTorch failed: $peer.log"; exit 1; }
                seconds=$(awk "BEGIN { print $(date +%s.%N) - $started }")
                epochs=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['epochs_run'])" "$peer/summary.json")
                "$RNNLM" import --weights "$peer/model.pt" --vocab-from "$train" --out "$peer/checkpoint" > /dev/null
                echo "$corpus,$ours,pytorch-$mkldnn,$budget,$seconds,$epochs,$(score "$peer/checkpoint" "$test" last | tr ' ' ',')" >> "$OUT/results.csv"
            done
        done
    done
done

"$PY" - "$OUT" <<'TABLE'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/results.csv")))
print("\n| corpus | model | minutes | rnnlm epochs | rnnlm last: test ppl, bits/char | rnnlm best (on validation): ppl, bits/char | PyTorch (better oneDNN): epochs, ppl, bits/char | best / PyTorch |")
print("|---|---|---|---|---|---|---|---|")
keys = dict.fromkeys((r["corpus"], r["budget_min"], r["model"]) for r in rows if r["side"].startswith("rnnlm"))
for corpus, budget, model in keys:
    same = [r for r in rows if (r["corpus"], r["budget_min"], r["model"]) == (corpus, budget, model)]
    last = [r for r in same if r["side"] == "rnnlm-last"][0]
    best = [r for r in same if r["side"] == "rnnlm-best"][0]
    theirs = [r for r in same if r["side"].startswith("pytorch")]
    peer = min(theirs, key=lambda r: float(r["perplexity"])) if theirs else None
    fig = lambda r: f"{float(r['perplexity']):.3f}, {float(r['bits']):.3f}"
    peer_text = f"{peer['epochs']}, {fig(peer)}" if peer else "-"
    ratio = f"{float(best['perplexity']) / float(peer['perplexity']):.3f}" if peer else "-"
    print(f"| {corpus} | {model} | {budget} | {last['epochs']} | {fig(last)} | {fig(best)} | {peer_text} | {ratio} |")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\n(no matplotlib in this Python: no plot)")
    sys.exit(0)
import glob, os
fig, axes = plt.subplots(1, len({r["corpus"] for r in rows}), figsize=(12, 4.5), squeeze=False)
for ax, corpus in zip(axes[0], dict.fromkeys(r["corpus"] for r in rows)):
    for run in sorted(glob.glob(f"{out}/{corpus}/ours-*")):
        if not os.path.isdir(run):
            continue
        metrics = list(csv.DictReader(open(f"{run}/metrics.csv")))
        seconds, total = [], 0.0
        for m in metrics:
            total += float(m["seconds"]); seconds.append(total)
        ax.plot(seconds, [float(m["valid_perplexity"]) for m in metrics], label=f"rnnlm {os.path.basename(run)[5:]}")
    for r in rows:
        if r["corpus"] == corpus and r["side"].startswith("pytorch"):  # one point per run
            ax.scatter(float(r["seconds"]), float(r["perplexity"]), marker="x", label=f"PyTorch {r['model']} {r['side'][8:]} {r['budget_min']} min")
    ax.set_title(f"{corpus} (rnnlm: validation part per epoch; PyTorch: test text at the end)")
    ax.set_xlabel("seconds"); ax.set_ylabel("held-out perplexity"); ax.legend(fontsize=6)
fig.tight_layout(); fig.savefig(f"{out}/time-to-perplexity.svg")
print(f"\nplot: {out}/time-to-perplexity.svg")
TABLE
