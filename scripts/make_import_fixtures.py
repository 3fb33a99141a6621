#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures under tests/fixtures/pytorch/ (run by hand, not by CI).

For each model: small random weights (2 recurrent layers), a batch of token ids, a non-zero
initial state, and PyTorch's own logits and final states. The Rust tests (tests/import/) load
the weights with rnnlm-import and compare rnnlm's forward pass with these outputs to 1e-5, with
no Python at test time.

    python3 -m venv venv && venv/bin/pip install torch safetensors
    venv/bin/python scripts/make_import_fixtures.py

Files per model NAME:
    NAME.pt                  torch.save(model.state_dict())   (what users have)
    NAME.safetensors         the same weights as safetensors
    NAME.io.safetensors      tokens [batch, steps] (int64), h0 [layers, batch, hidden] (and c0),
                             logits [batch, steps, vocab], hn (and cn) after the last step
"""
import os

import torch
from torch import nn
from safetensors.torch import save_file

VOCAB, HIDDEN, LAYERS, BATCH, STEPS, EMBED = 7, 5, 2, 3, 4, 4
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pytorch")


class CharModel(nn.Module):
    """d2l's RNNModel (one-hot input), or with an nn.Embedding in front."""

    def __init__(self, rnn, embedding=None):
        super().__init__()
        self.embedding = embedding
        self.rnn = rnn
        self.linear = nn.Linear(rnn.hidden_size, VOCAB)

    def forward(self, tokens, state):
        steps = tokens.T  # time-major, as nn.RNN's default layout
        x = self.embedding(steps) if self.embedding is not None else nn.functional.one_hot(steps, VOCAB).float()
        y, state = self.rnn(x, state)
        return self.linear(y).transpose(0, 1), state  # logits [batch, steps, vocab]


def d2l_scratch_forward(params, tokens, h):
    """d2l's rnn(): H = tanh(X W_xh + H W_hh + b_h), Y = H W_hq + b_q, one layer."""
    w_xh, w_hh, b_h, w_hq, b_q = params
    outputs = []
    for x in nn.functional.one_hot(tokens.T, VOCAB).float():
        h = torch.tanh(x @ w_xh + h @ w_hh + b_h)
        outputs.append(h @ w_hq + b_q)
    return torch.stack(outputs, 1), h


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(2024)
    tokens = torch.randint(0, VOCAB, (BATCH, STEPS))
    cases = {
        "rnn_tanh": CharModel(nn.RNN(VOCAB, HIDDEN, LAYERS, nonlinearity="tanh")),
        "rnn_relu": CharModel(nn.RNN(VOCAB, HIDDEN, LAYERS, nonlinearity="relu")),
        "gru": CharModel(nn.GRU(VOCAB, HIDDEN, LAYERS)),
        "lstm": CharModel(nn.LSTM(VOCAB, HIDDEN, LAYERS)),
        "lstm_embedding": CharModel(nn.LSTM(EMBED, HIDDEN, LAYERS), nn.Embedding(VOCAB, EMBED)),
        "gru_no_bias": CharModel(nn.GRU(VOCAB, HIDDEN, LAYERS, bias=False)),
    }
    for name, model in cases.items():
        model.eval()
        h0 = torch.randn(LAYERS, BATCH, HIDDEN)
        io = {"tokens": tokens, "h0": h0}
        if isinstance(model.rnn, nn.LSTM):
            c0 = torch.randn(LAYERS, BATCH, HIDDEN)
            io["c0"] = c0
            state = (h0, c0)
        else:
            state = h0
        with torch.no_grad():
            logits, state = model(tokens, state)
        io["logits"] = logits.contiguous()
        if isinstance(state, tuple):
            io["hn"], io["cn"] = state
        else:
            io["hn"] = state
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(weights, os.path.join(OUT, f"{name}.pt"))
        save_file(weights, os.path.join(OUT, f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, f"{name}.io.safetensors"))

    # d2l's classic scratch RNN keeps a parameter list; save it both ways users have it.
    params = [torch.randn(VOCAB, HIDDEN) * 0.5, torch.randn(HIDDEN, HIDDEN) * 0.5, torch.randn(HIDDEN) * 0.1,
              torch.randn(HIDDEN, VOCAB) * 0.5, torch.randn(VOCAB) * 0.1]
    h0 = torch.randn(1, BATCH, HIDDEN)
    logits, hn = d2l_scratch_forward(params, tokens, h0[0])
    torch.save({"params": params}, os.path.join(OUT, "d2l_scratch_list.pt"))
    names = ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]
    save_file(dict(zip(names, params)), os.path.join(OUT, "d2l_scratch.safetensors"))
    save_file({"tokens": tokens, "h0": h0, "logits": logits.contiguous(), "hn": hn.unsqueeze(0).contiguous()},
              os.path.join(OUT, "d2l_scratch.io.safetensors"))
    print(f"wrote {len(os.listdir(OUT))} files to {os.path.normpath(OUT)} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
