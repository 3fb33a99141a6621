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

and per bidirectional core on a padded batch (bigru_padded, bilstm_padded, birnn_padded: the
core alone, its keys under `rnn.`, batch_first=True, through pack_padded_sequence):
    NAME.pt, NAME.safetensors
    NAME.io.safetensors      x [batch, steps, input], lengths [batch] (int64, unsorted),
                             h0 [layers*2, batch, hidden] (and c0), out [batch, steps, 2*hidden]
                             (pad_packed_sequence's, zero past each row's length), hn (and cn)
"""
import os

import torch
from torch import nn
from safetensors.torch import save_file
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
    padded_cases()
    print(f"wrote {len(os.listdir(OUT))} files to {os.path.normpath(OUT)} with torch {torch.__version__}")


class Core(nn.Module):
    """A recurrent core alone, as a model of one's own holds it (keys `rnn.*`)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn


def padded_cases():
    """Bidirectional cores on a batch of rows of different lengths, unsorted, one of them a
    single step: PyTorch's packed-sequence outputs and final states."""
    torch.manual_seed(2025)
    inputs = 3
    lengths = torch.tensor([3, 4, 1])
    cases = {
        "bigru_padded": nn.GRU(inputs, HIDDEN, LAYERS, batch_first=True, bidirectional=True),
        "bilstm_padded": nn.LSTM(inputs, HIDDEN, LAYERS, batch_first=True, bidirectional=True),
        "birnn_padded": nn.RNN(inputs, HIDDEN, 1, batch_first=True, bidirectional=True),
    }
    for name, rnn in cases.items():
        model = Core(rnn).eval()
        x = torch.randn(BATCH, STEPS, inputs)
        h0 = torch.randn(rnn.num_layers * 2, BATCH, HIDDEN)
        io = {"x": x, "lengths": lengths, "h0": h0}
        state = h0
        if isinstance(rnn, nn.LSTM):
            io["c0"] = torch.randn(rnn.num_layers * 2, BATCH, HIDDEN)
            state = (h0, io["c0"])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        with torch.no_grad():
            out, state = rnn(packed, state)
        io["out"], _ = pad_packed_sequence(out, batch_first=True, total_length=STEPS)
        if isinstance(state, tuple):
            io["hn"], io["cn"] = state
        else:
            io["hn"] = state
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(weights, os.path.join(OUT, f"{name}.pt"))
        save_file(weights, os.path.join(OUT, f"{name}.safetensors"))
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, f"{name}.io.safetensors"))


if __name__ == "__main__":
    main()
