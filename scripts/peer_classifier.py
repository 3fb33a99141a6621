#!/usr/bin/env python3
"""Training throughput of the primer's sequence classifier in plain PyTorch, the peer side of the
side-by-side benchmark: inputs [batch, steps, features] (28 steps of 28 features by default), an
nn.LSTM or nn.GRU (batch_first) with `--layers` layers of `--hidden` units, the top layer's output
at the last step, nn.Linear(hidden, classes), cross-entropy, Adam(lr=1e-3). One timed step is
forward, loss, zero_grad, backward and optimizer step, measured with time.perf_counter().
Inputs and labels are random (a few batches generated once and cycled through), so only speed is
meaningful, not the loss.

With `--bidirectional` every layer also reads backwards; with `--shortest N` every batch has
random lengths N..=steps, goes through `pack_padded_sequence` (enforce_sorted=False, as a batch
arrives), and the head reads h_n (both directions' final states of the top layer).

Run by hand (not in CI), with torch installed:
  python scripts/peer_classifier.py --cell lstm --hidden 256 --layers 2 --batch-size 128 \
      --mkldnn off --json out.json
"""
import argparse
import json
import resource
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

NUM_BATCHES = 4


class Classifier(nn.Module):
    def __init__(self, cell, features, hidden, layers, classes, bidirectional):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(features, hidden, num_layers=layers, batch_first=True,
                       bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden * self.directions, classes)

    def forward(self, x, lengths=None):
        if lengths is None:
            out, _ = self.rnn(x)
            return self.head(out[:, -1, :])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state
        top = h_n[-self.directions:]  # [directions, batch, hidden]
        return self.head(top.transpose(0, 1).reshape(x.shape[0], -1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", choices=["lstm", "gru"], required=True)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps-per-seq", type=int, default=28)
    p.add_argument("--features", type=int, default=28)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--shortest", type=int, help="random lengths SHORTEST..=steps, packed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mkldnn", choices=["on", "off"], default="on")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps")
    p.add_argument("--repeats", type=int, default=20, help="timed steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the results as one JSON object")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.backends.mkldnn.enabled = args.mkldnn == "on"
    torch.manual_seed(args.seed)

    net = Classifier(args.cell, args.features, args.hidden, args.layers, args.classes,
                     args.bidirectional)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    shape = (args.batch_size, args.steps_per_seq, args.features)
    def lengths():
        if args.shortest is None:
            return None
        return torch.randint(args.shortest, args.steps_per_seq + 1, (args.batch_size,))

    batches = [(torch.randn(shape), torch.randint(0, args.classes, (args.batch_size,)), lengths())
               for _ in range(NUM_BATCHES)]

    def step(i):
        x, y, lens = batches[i % NUM_BATCHES]
        loss = loss_fn(net(x, lens), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    times_ms = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        step(args.warmup + i)
        times_ms.append((time.perf_counter() - t0) * 1e3)

    median_s = statistics.median(times_ms) / 1e3
    result = {
        "cell": args.cell,
        "hidden": args.hidden,
        "layers": args.layers,
        "batch_size": args.batch_size,
        "bidirectional": args.bidirectional,
        "shortest": args.shortest,
        "steps": args.steps_per_seq,
        "features": args.features,
        "threads": args.threads,
        "mkldnn": args.mkldnn,
        "torch_version": torch.__version__,
        "step_ms_median": median_s * 1e3,
        "samples_per_s": args.batch_size / median_s,
        "tokens_per_s": args.batch_size * args.steps_per_seq / median_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "step_ms_all": times_ms,
    }
    print(f"{'bi' if args.bidirectional else ''}{args.cell} H={args.hidden} L={args.layers} B={args.batch_size} T={args.steps_per_seq} "
          f"threads={args.threads} mkldnn={args.mkldnn} torch {torch.__version__}: "
          f"median {result['step_ms_median']:.2f} ms/step, {result['samples_per_s']:.0f} samples/s, "
          f"{result['tokens_per_s']:.0f} tokens/s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
