#!/usr/bin/env python3
"""Validation perplexity of the PyTorch reference (../shared/peers/pytorch/d2l_charlm.py) with the
same split as `rnnlm train`: the last `--valid-fraction` of the corpus is held out, the model trains
on the rest with d2l's sequential partitioning, and after every epoch the held-out part is scored
with sequential partitioning and the state carried, without gradients.

Run by hand (not in CI), with torch installed:
  python scripts/peer_valid.py --model gru --epochs 10
and compare with
  rnnlm train --config configs/gru.toml --set data.max_tokens=0 --set data.valid_fraction=0.1 \
      --set train.epochs=10
"""
import argparse
import math
import os
import random
import sys

import torch

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers", "pytorch")
sys.path.insert(0, os.environ.get("RNNLM_PEER_DIR", PEER))
sys.dont_write_bytecode = True  # leave the shared peer directory as it is
import d2l_charlm as peer  # noqa: E402


def valid_perplexity(net, corpus, batch_size, num_steps):
    loss = torch.nn.CrossEntropyLoss()
    state, nll, count = None, 0.0, 0
    with torch.no_grad():
        for X, Y in peer.seq_data_iter_sequential(corpus, batch_size, num_steps):
            if state is None:
                state = net.begin_state(batch_size=X.shape[0])
            y = Y.T.reshape(-1)
            y_hat, state = net(X, state)
            nll += float(loss(y_hat, y.long())) * y.numel()
            count += y.numel()
    return math.exp(nll / count)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(peer.DEFAULTS), required=True)
    ap.add_argument("--data", default=os.path.join(PEER, "..", "..", "data", "timemachine.txt"))
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    hidden, lr, layers = peer.DEFAULTS[args.model]
    corpus, vocab = peer.load_corpus_time_machine(args.data, "lines")
    held_out = round(len(corpus) * args.valid_fraction)
    train, valid = corpus[: len(corpus) - held_out], corpus[len(corpus) - held_out:]
    net = peer.build(args.model, len(vocab), hidden, layers)
    loss = torch.nn.CrossEntropyLoss()
    if isinstance(net, torch.nn.Module):
        updater = torch.optim.SGD(net.parameters(), lr)
    else:
        updater = lambda batch_size: peer.sgd(net.params, lr, batch_size)  # noqa: E731
    print(f"{args.model}: hidden {hidden}, layers {layers}, lr {lr}; train {len(train)} tokens, valid {len(valid)}")
    for epoch in range(1, args.epochs + 1):
        r, _ = peer.train_epoch(net, train, 32, 35, loss, updater)
        print(f"epoch {epoch}/{args.epochs}  train ppl {r['ppl']:.3f}  valid ppl {valid_perplexity(net, valid, 32, 35):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
