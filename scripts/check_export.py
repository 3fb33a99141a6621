#!/usr/bin/env python3
"""Checks an `rnnlm export` against PyTorch itself.

    check_export.py MODEL_FILE CONFIG_JSON PROBE_JSON

MODEL_FILE is the exported weights (.pt, read with torch.load and its defaults, weights_only
included; or .safetensors, read with safetensors.torch.load_file). CONFIG_JSON is the module
description written beside it (rnnlm::export::TorchLm: vocab_size, input, embedding, rnn,
linear). PROBE_JSON holds {"tokens": [[id, ...], ...], "logits": [[[...], ...], ...]}: a batch of
token ids [batch, steps] and rnnlm's logits for it [batch, steps, vocab].

Builds nn.Embedding (or one-hot input) + nn.RNN/nn.GRU/nn.LSTM + nn.Linear from the description,
loads the weights with load_state_dict(strict=True), runs the tokens and compares the logits with
rnnlm's. Exit status 0 when they agree to 1e-5, 1 when they differ or the weights do not load,
2 on bad arguments.
"""

import json
import sys
import warnings

# The slim venv has no NumPy, which nothing here uses; torch warns about it on every run.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch
import torch.nn as nn
import torch.nn.functional as F

TOLERANCE = 1e-5


class ExportedLm(nn.Module):
    """The language model an export describes; attribute names are the state dict's prefixes."""

    def __init__(self, config):
        super().__init__()
        self.vocab_size = config["vocab_size"]
        embedding = config.get("embedding")
        if embedding is not None:
            self.embedding = nn.Embedding(embedding["num_embeddings"], embedding["embedding_dim"])
        else:
            self.embedding = None
        rnn = config["rnn"]
        kwargs = dict(
            num_layers=rnn["num_layers"],
            bias=rnn["bias"],
            batch_first=rnn["batch_first"],
            dropout=rnn["dropout"],
            bidirectional=rnn["bidirectional"],
        )
        if rnn["type"] == "RNN":
            kwargs["nonlinearity"] = rnn.get("nonlinearity", "tanh")
        module = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[rnn["type"]]
        self.rnn = module(rnn["input_size"], rnn["hidden_size"], **kwargs)
        linear = config["linear"]
        self.linear = nn.Linear(linear["in_features"], linear["out_features"], bias=linear["bias"])

    def forward(self, tokens):
        """tokens [batch, steps] -> logits [batch, steps, vocab]."""
        if self.embedding is not None:
            inputs = self.embedding(tokens)
        else:
            inputs = F.one_hot(tokens, self.vocab_size).float()
        if not self.rnn.batch_first:
            inputs = inputs.transpose(0, 1)
        outputs, _ = self.rnn(inputs)
        if not self.rnn.batch_first:
            outputs = outputs.transpose(0, 1)
        return self.linear(outputs)


def load_weights(path):
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic == b"PK\x03\x04":
        return torch.load(path)  # torch >= 2.6: weights_only=True
    from safetensors.torch import load_file

    return load_file(path)


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model_file, config_file, probe_file = argv[1:]
    with open(config_file) as file:
        config = json.load(file)
    with open(probe_file) as file:
        probe = json.load(file)
    model = ExportedLm(config)
    try:
        model.load_state_dict(load_weights(model_file), strict=True)
    except Exception as error:  # noqa: BLE001 - any failure to load is the finding
        print(f"{model_file}: the weights do not load into {model}: {error}", file=sys.stderr)
        return 1
    model.eval()
    tokens = torch.tensor(probe["tokens"], dtype=torch.long)
    ours = torch.tensor(probe["logits"], dtype=torch.float32)
    with torch.no_grad():
        theirs = model(tokens)
    if theirs.shape != ours.shape:
        print(f"{model_file}: PyTorch's logits are {tuple(theirs.shape)}, rnnlm's {tuple(ours.shape)}", file=sys.stderr)
        return 1
    diff = (theirs - ours).abs().max().item()
    verdict = "ok" if diff <= TOLERANCE else f"FAIL (tolerance {TOLERANCE})"
    print(f"{model_file}: torch {torch.__version__}, max |logits - rnnlm's| = {diff:.3g} over {ours.numel()} values: {verdict}")
    return 0 if diff <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
