"""The sentence scorer: an MLP head over frozen sentence features, as in the FRACTAL reference code.

``score = σ(MLP(features))`` with ``features`` from :mod:`adaptlab.fractal.features`
(``[e_s, e_c, e_s⊙e_c, |e_s − e_c|]``). A saved scorer is a directory with ``scorer.safetensors``
and ``scorer.json`` (head shape, the feature model it expects, the aggregation it was trained for).
A scorer whose encoder was fine-tuned (:mod:`adaptlab.fractal.finetune`) also holds that encoder in a
subdirectory named by ``scorer.json``'s ``"encoder"``; loading points ``feature_model`` at it, so the
head always sees features of the encoder it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adaptlab.errors import ModelError
from adaptlab.runs import atomic_write_json


class SentenceScorer(nn.Module):
    def __init__(self, feature_dim: int, hidden: int = 256, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.shape = {"feature_dim": feature_dim, "hidden": hidden, "layers": layers, "dropout": dropout}
        blocks: list[nn.Module] = []
        width = feature_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*blocks)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Sentence scores in (0, 1)."""
        return torch.sigmoid(self.logits(features))

    @torch.no_grad()
    def score(self, features: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        scores = self(features)
        self.train(was_training)
        return scores


def save_scorer(model: SentenceScorer, directory: str | Path, info: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "scorer.safetensors")
    atomic_write_json(directory / "scorer.json", {"head": model.shape, **info})
    return directory


def load_scorer(directory: str | Path) -> tuple[SentenceScorer, dict[str, Any]]:
    directory = Path(directory)
    if (directory / "model" / "scorer.json").is_file():  # a training run directory
        directory = directory / "model"
    meta_path = directory / "scorer.json"
    if not meta_path.is_file():
        raise ModelError(f"{directory} is not a FRACTAL scorer (no scorer.json); pass a 'fractal train' output")
    info = json.loads(meta_path.read_text(encoding="utf-8"))
    if info.get("encoder"):  # a fine-tuned encoder saved beside the head
        encoder_dir = directory / info["encoder"]
        if not encoder_dir.is_dir():
            raise ModelError(f"{meta_path} names the fine-tuned encoder {info['encoder']!r}, but {encoder_dir} "
                             "is missing; copy the whole scorer directory")
        info["feature_model"] = str(encoder_dir.resolve())
    model = SentenceScorer(**info["head"])
    model.load_state_dict(load_file(directory / "scorer.safetensors"))
    return model.eval(), info
