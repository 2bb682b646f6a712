"""The sentence scorer: an MLP head over frozen sentence features, as in the FRACTAL reference code.

``score = σ(MLP(x))`` with features ``f = [e_s, e_c, e_s⊙e_c, |e_s − e_c|]`` from
:mod:`adaptlab.fractal.features`. The head reads ``x = f`` with ``context_block=True`` (the reference
code's input, and every scorer saved before the option existed), or ``x = [e_s, e_s⊙e_c, |e_s − e_c|]``
without the context embedding on its own: inside a bag ``e_c`` is constant, so that block can only
move all of a question's sentences together, and with one bag per question it lets the head learn
each training question's bag label instead of which sentences earn it (see
:class:`adaptlab.fractal.train.FractalTrainConfig`). With a fitted :class:`~adaptlab.fractal.prior_mix.PriorMix`
the score is ``σ(a·u(λ) + c)``, the head's logit mixed with the question–sentence cosine read off ``f``.
A saved scorer is a directory with ``scorer.safetensors`` and ``scorer.json`` (head shape, the prior
mix if any, the feature model it expects, the aggregation it was trained for).
A scorer whose encoder was fine-tuned (:mod:`adaptlab.fractal.finetune`) also holds that encoder in a
subdirectory named by ``scorer.json``'s ``"encoder"``; loading points ``feature_model`` at it, so the
head always sees features of the encoder it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from adaptlab.errors import ModelError
from adaptlab.fractal.prior_mix import PriorMix, feature_prior, mixed_logits
from adaptlab.runs import atomic_write_json


class SentenceScorer(nn.Module):
    def __init__(self, feature_dim: int, hidden: int = 256, layers: int = 2, dropout: float = 0.1,
                 context_block: bool = True):
        super().__init__()
        self.shape = {"feature_dim": feature_dim, "hidden": hidden, "layers": layers, "dropout": dropout,
                      "context_block": context_block}
        self.prior_mix: PriorMix | None = None
        blocks: list[nn.Module] = []
        width = feature_dim if context_block else feature_dim - feature_dim // 4
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*blocks)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The MLP's logit, before any prior mix."""
        if not self.shape["context_block"]:
            dim = features.shape[1] // 4
            features = torch.cat([features[:, :dim], features[:, 2 * dim:]], dim=1)
        return self.mlp(features).squeeze(-1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head's logit, mixed with the feature prior once a :class:`PriorMix` is set."""
        head = self.head_logits(features)
        return head if self.prior_mix is None else mixed_logits(feature_prior(features), head, self.prior_mix)

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
    mix = {} if model.prior_mix is None else {"prior_mix": asdict(model.prior_mix)}
    atomic_write_json(directory / "scorer.json", {"head": model.shape, **mix, **info})
    return directory


def load_scorer(directory: str | Path) -> tuple[SentenceScorer, dict[str, Any]]:
    directory = Path(directory)
    if (directory / "model" / "scorer.json").is_file():  # a training run directory
        directory = directory / "model"
    meta_path = directory / "scorer.json"
    if not meta_path.is_file():
        raise ModelError(f"{directory} is not a FRACTAL scorer (no scorer.json); pass a 'fractal train' output")
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
        head = dict(info["head"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{meta_path} is damaged ({type(exc).__name__}: {exc}); train the scorer again") from None
    if info.get("encoder"):  # a fine-tuned encoder saved beside the head
        encoder_dir = directory / info["encoder"]
        if not encoder_dir.is_dir():
            raise ModelError(f"{meta_path} names the fine-tuned encoder {info['encoder']!r}, but {encoder_dir} "
                             "is missing; copy the whole scorer directory")
        info["feature_model"] = str(encoder_dir.resolve())
    model = SentenceScorer(**head)
    weights = directory / "scorer.safetensors"
    try:
        model.load_state_dict(load_file(weights))
    except (OSError, RuntimeError, SafetensorError) as exc:  # missing, truncated, or another head's shapes
        raise ModelError(f"{weights} cannot be loaded as the head {meta_path.name} describes ({exc}); copy the "
                         "whole scorer directory again or train it again") from None
    if info.get("prior_mix"):
        saved = info["prior_mix"]
        model.prior_mix = PriorMix(**{**saved, "grid_losses": tuple(saved["grid_losses"]),
                                      "grid_concordance": tuple(saved["grid_concordance"])})
    return model.eval(), info
