#!/usr/bin/env python3
"""Training throughput of d2l's character language models in plain PyTorch on any device (cuDNN's
nn.RNN/GRU/LSTM on a GPU): the peer of `rnnlm bench --only train` for scripts/gpu-bench.sh.

The models of `rnnlm bench`: rnn-scratch (nn.RNN tanh, hidden 512), gru (nn.GRU 256), lstm
(nn.LSTM 256), deep-lstm (2 x nn.LSTM 256); one-hot inputs of a 28-token vocabulary, batch 32 x 35
steps (time-major, as d2l), nn.Linear to the vocabulary, cross-entropy, SGD, global-norm clipping
(theta 1), the state carried and detached between steps. One timed step is forward, loss,
zero_grad, backward, clipping and the update, bracketed by torch.cuda.synchronize() on a GPU.
Inputs are random token ids (only speed is meaningful).

  python scripts/peer_lm.py --model lstm --device cuda --json out.json
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn

MODELS = {
    "rnn-scratch": ("rnn", 512, 1),
    "gru": ("gru", 256, 1),
    "lstm": ("lstm", 256, 1),
    "deep-lstm": ("lstm", 256, 2),
}


class Lm(nn.Module):
    def __init__(self, cell, vocab, hidden, layers):
        super().__init__()
        kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.vocab = vocab
        self.rnn = kind(vocab, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state):
        x = nn.functional.one_hot(ids, self.vocab).float()  # [steps, batch, vocab]
        out, state = self.rnn(x, state)
        return self.head(out), state


def detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--hidden", type=int, help="instead of the model's own")
    p.add_argument("--layers", type=int, help="instead of the model's own")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=35)
    p.add_argument("--vocab", type=int, default=28)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (cpu only)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cell, hidden, layers = MODELS[args.model]
    hidden = args.hidden or hidden
    layers = args.layers or layers
    net = Lm(cell, args.vocab, hidden, layers).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    loss_fn = nn.CrossEntropyLoss()
    shape = (args.num_steps, args.batch_size)
    batches = [(torch.randint(0, args.vocab, shape, device=device),
                torch.randint(0, args.vocab, shape, device=device)) for _ in range(4)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    state = None

    def step(i):
        nonlocal state
        x, y = batches[i % len(batches)]
        logits, state = net(x, detach(state))
        loss = loss_fn(logits.reshape(-1, args.vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for i in range(args.warmup):
        step(i)
    sync()
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        step(args.warmup + i)
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = args.batch_size * args.num_steps
    result = {
        "model": args.model, "cell": cell, "hidden": hidden, "layers": layers,
        "batch_size": args.batch_size, "num_steps": args.num_steps, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "torch_version": torch.__version__, "step_ms_median": median * 1e3,
        "tokens_per_s": tokens / median,
    }
    print(f"{args.model} H={hidden} L={layers} B={args.batch_size} T={args.num_steps} on "
          f"{result['device_name']} (torch {torch.__version__}, cuDNN {result['cudnn']}): "
          f"median {median * 1e3:.2f} ms/step, {tokens / median:.0f} tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
