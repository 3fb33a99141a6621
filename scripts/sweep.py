"""Training speed across model sizes, ours against the PyTorch reference: run by scripts/sweep.sh
(which gives it its own session and CPU share); see that file for the options.

Per point of the grid (cell, hidden, batch, layers, steps), in one run and alternating, ROUNDS
times: `rnnlm bench` (training tokens/s, GFLOP/s; batch-1 generation where the batch is 1) and
d2l_charlm.py with oneDNN on and off (the better figure of each kept), each side's peak memory
taken from the kernel (wait4's ru_maxrss of its process). Medians over the rounds go to
sweep.csv, a markdown table to sweep.md and a plot (tokens/s against hidden size, one line per
cell and side, a panel per batch and depth) to sweep.svg. A point that fails (memory, a missing
peer) is written as such and the sweep goes on.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time

ENV = os.environ
OUT = sys.argv[1]
RNNLM, PY, PEER = ENV["RNNLM"], ENV["PY"], ENV["PEER"]
CELLS = ENV.get("CELLS", "rnn gru lstm").split()
HIDDEN = [int(h) for h in ENV.get("HIDDEN", "128 256 512 1024 2048").split()]
BATCHES = [int(b) for b in ENV.get("BATCHES", "1 8 32 128").split()]
LAYERS = [int(n) for n in ENV.get("LAYERS", "1 2").split()]
# Points beyond the grid, cell:hidden:batch:layers:steps (the issue's 3-layer and 200-step rows).
EXTRA = ENV.get("EXTRA", "lstm:512:32:3:35 lstm:512:32:2:200").split()
ROUNDS = int(ENV.get("ROUNDS", "3"))
BUDGET_MINUTES = float(ENV.get("BUDGET_MINUTES", "240"))
STEPS = 35
VOCAB = 28
# Seconds of timed training per side, point and round; the step counts follow from it.
TIMED_SECONDS = float(ENV.get("TIMED_SECONDS", "4"))
OURS_MODEL = {"rnn": "rnn-scratch", "gru": "gru", "lstm": "lstm"}
# PyTorch's fastest equivalent of each: nn.RNN for d2l's scratch RNN (same recurrence, tanh).
PEER_MODEL = {"rnn": "rnn", "gru": "gru", "lstm": "lstm"}
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def flop_per_token(cell, hidden, layers):
    """Training FLOP per token as `rnnlm bench` counts it: three times the forward's products."""
    g, forward = GATES[cell], 0.0
    for layer in range(layers):
        inputs = VOCAB if layer == 0 else hidden
        forward += 2 * g * hidden * (inputs + hidden)
    forward += 2 * hidden * VOCAB
    return 3 * forward


def points():
    grid = [(c, h, b, n, STEPS) for c in CELLS for n in LAYERS for b in BATCHES for h in HIDDEN]
    for extra in EXTRA:
        c, h, b, n, t = extra.split(":")
        grid.append((c, int(h), int(b), int(n), int(t)))
    return grid


def run(command, log):
    """Runs a command; its exit code, stdout, and its peak resident memory in MB."""
    with open(log, "ab") as err:
        err.write(("$ " + " ".join(command) + "\n").encode())
        err.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        stdout = process.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, usage.ru_maxrss / 1024


def measure_roof():
    code, stdout, _ = run([RNNLM, "bench", "--roof", "--json"], f"{OUT}/sweep.log")
    if code != 0:
        sys.exit(f"rnnlm bench --roof failed: see {OUT}/sweep.log")
    return json.loads(stdout)


def plan(point, roof):
    """Timed steps, and the estimated seconds of one round of the point (both sides)."""
    cell, hidden, batch, layers, steps = point
    tokens = batch * steps
    # Small points run far below the roof (a few percent at batch 1); guess from the batch.
    share = {1: 0.03, 8: 0.15, 32: 0.4}.get(batch, 0.5)
    step_seconds = tokens * flop_per_token(cell, hidden, layers) / (roof * 1e9 * share)
    timed = max(3, min(30, round(TIMED_SECONDS / step_seconds)))
    # Ours: warm-up 2 + timed; PyTorch twice (oneDNN on, off), each a warm-up epoch and a timed
    # one, which at least matches ours; process start-ups (PyTorch's import) a few seconds each.
    ours = (timed + 2) * step_seconds + 3
    theirs = 2 * (2 * timed * step_seconds / 0.7 + 5)
    gen = 2 * 3 * 500 / 2000 if batch == 1 else 0
    return timed, ours + theirs + gen


def ours(point, timed, log):
    cell, hidden, batch, layers, steps = point
    only = "train,gen" if batch == 1 else "train"
    code, stdout, peak = run([RNNLM, "bench", "--model", OURS_MODEL[cell], "--hidden", str(hidden),
                              "--layers", str(layers), "--batch-size", str(batch), "--num-steps",
                              str(steps), "--device", "flex", "--json", "--steps", str(timed),
                              "--warmup", "2", "--only", only], log)
    if code != 0:
        return {"error": f"rnnlm exit {code}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"tokens": result["train_tokens_per_s"], "gflops": result["train_gflop_per_s"],
            "gen1": result["gen_chars_per_s_batch1"], "peak_mb": peak}


def theirs(point, timed, mkldnn, log):
    cell, hidden, batch, layers, steps = point
    summary = f"{OUT}/peer.json"
    if os.path.exists(summary):
        os.remove(summary)
    # An epoch of `timed` minibatches: the first epoch warms up, the second is timed.
    max_tokens = batch * (steps * (timed + 1) + 2)
    gen = ["--gen-chars", "500", "--gen-repeats", "3"] if batch == 1 else ["--gen-chars", "1", "--gen-repeats", "1"]
    code, _, peak = run([PY, f"{PEER}/d2l_charlm.py", "--model", PEER_MODEL[cell], "--hidden", str(hidden),
                         "--layers", str(layers), "--batch-size", str(batch), "--num-steps", str(steps),
                         "--max-tokens", str(max_tokens), "--epochs", "2", "--threads", "2",
                         "--mkldnn", mkldnn, "--json", summary] + gen, log)
    if code != 0 or not os.path.exists(summary):
        return {"error": f"PyTorch (oneDNN {mkldnn}) exit {code}"}
    result = json.load(open(summary))
    tokens = result["steady_tok_per_s_from_median_step"] or result["steady_tok_per_s_step_median"]
    gen1 = statistics.median(result["gen_chars_per_s_nograd"]) if batch == 1 else 0.0
    return {"tokens": tokens, "gen1": gen1, "peak_mb": peak}


def main():
    os.makedirs(OUT, exist_ok=True)
    log = f"{OUT}/sweep.log"
    roof = measure_roof()
    print(f"roof: {roof['roof_gflop_per_s']:.1f} GFLOP/s ({roof['size']}x{roof['size']} float32, "
          f"{roof['threads']} threads; gemm crate {roof['gemm_crate_gflop_per_s']:.1f}, "
          f"rnnlm-kernels {roof['ours_gflop_per_s']:.1f})", flush=True)
    grid = points()
    plans = {p: plan(p, roof["roof_gflop_per_s"]) for p in grid}
    minutes = ROUNDS * sum(seconds for _, seconds in plans.values()) / 60
    print(f"{len(grid)} points x {ROUNDS} rounds: about {minutes:.0f} minutes (budget "
          f"{BUDGET_MINUTES:.0f}, BUDGET_MINUTES)", flush=True)
    if minutes > BUDGET_MINUTES:
        sys.exit(f"the grid would take about {minutes:.0f} minutes, over the budget of "
                 f"{BUDGET_MINUTES:.0f}: narrow it (CELLS, HIDDEN, BATCHES, LAYERS, EXTRA, ROUNDS) "
                 f"or raise BUDGET_MINUTES")
    results = {p: {"ours": [], "on": [], "off": []} for p in grid}
    started = time.time()
    for round_ in range(1, ROUNDS + 1):
        for point in grid:
            timed = plans[point][0]
            print(f"round {round_}: {point} ({time.time() - started:.0f} s)", flush=True)
            results[point]["ours"].append(ours(point, timed, log))
            for mkldnn in ("on", "off"):
                results[point][mkldnn].append(theirs(point, timed, mkldnn, log))
    rows = [row(point, results[point], roof["roof_gflop_per_s"]) for point in grid]
    write(rows, roof)


def median_of(runs, key):
    values = [r[key] for r in runs if "error" not in r]
    return statistics.median(values) if values else None


def row(point, runs, roof):
    cell, hidden, batch, layers, steps = point
    out = {"cell": cell, "hidden": hidden, "batch": batch, "layers": layers, "steps": steps}
    errors = sorted({r["error"] for side in runs.values() for r in side if "error" in r})
    mine = median_of(runs["ours"], "tokens")
    # PyTorch's better setting, by its median over the rounds, for each figure.
    best = lambda key: max((v for v in (median_of(runs[m], key) for m in ("on", "off")) if v is not None),
                           default=None)
    peer = best("tokens")
    out.update(ours_tok_s=mine, pytorch_tok_s=peer,
               ratio=mine / peer if mine and peer else None,
               ours_gflops=median_of(runs["ours"], "gflops"))
    out["roof_share"] = out["ours_gflops"] / roof if out["ours_gflops"] else None
    out["ours_peak_mb"] = median_of(runs["ours"], "peak_mb")
    peaks = [v for v in (median_of(runs[m], "peak_mb") for m in ("on", "off")) if v is not None]
    out["pytorch_peak_mb"] = min(peaks) if peaks else None
    if batch == 1:
        out["ours_gen1"] = median_of(runs["ours"], "gen1")
        out["pytorch_gen1"] = best("gen1")
        out["gen1_ratio"] = out["ours_gen1"] / out["pytorch_gen1"] if out["ours_gen1"] and out["pytorch_gen1"] else None
    out["status"] = "; ".join(errors) if errors else "ok"
    return out


FIELDS = ["cell", "hidden", "batch", "layers", "steps", "ours_tok_s", "pytorch_tok_s", "ratio",
          "ours_gflops", "roof_share", "ours_peak_mb", "pytorch_peak_mb", "ours_gen1",
          "pytorch_gen1", "gen1_ratio", "status"]


def write(rows, roof):
    with open(f"{OUT}/sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    lines = [f"roof {roof['roof_gflop_per_s']:.1f} GFLOP/s (gemm crate {roof['gemm_crate_gflop_per_s']:.1f}, "
             f"rnnlm-kernels {roof['ours_gflop_per_s']:.1f}), {ROUNDS} rounds, medians", "",
             "| cell | hidden | batch | layers | steps | ours tok/s | PyTorch tok/s | ratio | GFLOP/s (roof share) "
             "| peak MB ours / PyTorch | gen b1 ours / PyTorch (ratio) | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gen = (f"{fmt(r.get('ours_gen1'), '.0f')} / {fmt(r.get('pytorch_gen1'), '.0f')} "
               f"({fmt(r.get('gen1_ratio'), '.2f')})") if r["batch"] == 1 else ""
        share = f"{fmt(r['ours_gflops'], '.0f')} ({fmt(r['roof_share'] and 100 * r['roof_share'], '.0f')} %)"
        lines.append(f"| {r['cell']} | {r['hidden']} | {r['batch']} | {r['layers']} | {r['steps']} | "
                     f"{fmt(r['ours_tok_s'], '.0f')} | {fmt(r['pytorch_tok_s'], '.0f')} | {fmt(r['ratio'], '.2f')} | "
                     f"{share} | {fmt(r['ours_peak_mb'], '.0f')} / {fmt(r['pytorch_peak_mb'], '.0f')} | {gen} | {r['status']} |")
    open(f"{OUT}/sweep.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows)


def plot(rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib in this Python: no plot)")
        return
    # The grid's points only (the EXTRA rows are in the table).
    grid = [r for r in rows if r["steps"] == STEPS and r["layers"] in LAYERS and r["batch"] in BATCHES
            and r["hidden"] in HIDDEN]
    depths = sorted({r["layers"] for r in grid})
    batches = sorted({r["batch"] for r in grid})
    fig, axes = plt.subplots(len(depths), len(batches), figsize=(4 * len(batches), 3.4 * len(depths)),
                             squeeze=False, sharex=True)
    colours = {"rnn": "tab:green", "gru": "tab:blue", "lstm": "tab:red"}
    for i, layers in enumerate(depths):
        for j, batch in enumerate(batches):
            ax = axes[i][j]
            for cell in CELLS:
                line = sorted((r for r in grid if (r["cell"], r["layers"], r["batch"]) == (cell, layers, batch)),
                              key=lambda r: r["hidden"])
                for key, style, side in (("ours_tok_s", "-", "rnnlm"), ("pytorch_tok_s", "--", "PyTorch")):
                    xs = [r["hidden"] for r in line if r[key]]
                    ax.plot(xs, [r[key] for r in line if r[key]], style, marker="o", markersize=3,
                            color=colours.get(cell), label=f"{cell}, {side}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"batch {batch}, {layers} layer{'s' if layers > 1 else ''}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("training tokens/s")
            if i == len(depths) - 1:
                ax.set_xlabel("hidden size")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Training throughput: rnnlm (solid) and PyTorch (dashed, better of oneDNN on/off)")
    fig.tight_layout()
    fig.savefig(f"{OUT}/sweep.svg")
    print(f"plot: {OUT}/sweep.svg")


if __name__ == "__main__":
    main()
