"""The multi-task model: one shared encoder and one head per task (MT-DNN, Liu et al. 2019).

Each task's forward is transformers' own: for every task a ``AutoModelForTokenClassification`` or
``AutoModelForSequenceClassification`` is built from the encoder's config with that task's labels, and its base
model (``bert``, ``roberta``, ``distilbert``, ...) is replaced by the one shared encoder object. These *task views*
share the encoder's parameters and keep their own head (classifier, and ``pre_classifier`` or a classification
head where the family has one), so

* a batch of task ``t`` runs exactly the forward and loss of that task's HF model (token cross-entropy,
  softmax or multi-label BCE), and
* exporting task ``t`` (:func:`export_task`) is copying its view into a fresh model of the same class: a plain HF
  model directory that ``transformers.pipeline`` and adaptlab's predictors load, giving the same logits.

Only the encoder and the heads are registered as submodules (the views are not), so the state dict holds every
tensor once and checkpoints save as plain safetensors. The encoder's pooler, where it has one (BERT), is shared
by the sequence tasks; a token task's export drops it, as ``*ForTokenClassification`` has none.

For the strategies (``strategy.layers``, ``strategy.dynamic``) the model answers like an HF task model:
``base_model`` is the shared encoder, so :class:`~adaptlab.tuning.families.Family` finds its embeddings and
layers, and every head parameter (all tasks' heads and the pooler) is ``head``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from adaptlab.errors import ModelError
from adaptlab.tuning.families import Family

HeadKind = Literal["token_classification", "sequence_classification"]
SHARED_ENCODER = Family("encoder", "multitask", "FEATURE_EXTRACTION")


@dataclass(frozen=True)
class HeadSpec:
    """One task's head: its name, kind and label names in id order; ``multi_label`` for sigmoid-per-label."""

    name: str
    kind: HeadKind
    labels: tuple[str, ...]
    multi_label: bool = False


def task_view(encoder: Any, spec: HeadSpec) -> Any:
    """An HF task model of ``spec``'s kind and labels whose base model is ``encoder`` itself (shared)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = copy.deepcopy(encoder.config)
    config.id2label = dict(enumerate(spec.labels))
    config.label2id = {label: i for i, label in enumerate(spec.labels)}
    auto = AutoModelForTokenClassification
    if spec.kind == "sequence_classification":
        auto = AutoModelForSequenceClassification
        config.problem_type = "multi_label_classification" if spec.multi_label else "single_label_classification"
    try:
        view = auto.from_config(config)
    except ValueError as exc:
        raise ModelError(f"model: a {config.model_type} encoder has no {spec.kind.replace('_', ' ')} head in "
                         f"transformers, which task {spec.name!r} needs ({exc})") from None
    view.config.architectures = [type(view).__name__]
    setattr(view, view.base_model_prefix, encoder)
    return view


class MultitaskModel(nn.Module):
    """The shared encoder and one task view per :class:`HeadSpec` (module docstring).

    ``forward(task=...)`` takes a batch of one task (``task`` holds that task's index in every row) and returns that
    task's HF output (``loss`` when ``labels`` are given, ``logits``).
    """

    def __init__(self, encoder: Any, specs: Sequence[HeadSpec]):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.specs = list(specs)
        self.views = [task_view(encoder, spec) for spec in self.specs]  # a list, so not registered twice
        self.heads = nn.ModuleList(
            nn.ModuleDict({name: child for name, child in view.named_children() if child is not encoder})
            for view in self.views)

    @property
    def base_model(self) -> Any:
        return self.encoder

    def view(self, name: str) -> Any:
        """The HF task model of task ``name`` (sharing this model's encoder)."""
        return self.views[[spec.name for spec in self.specs].index(name)]

    def train(self, mode: bool = True) -> MultitaskModel:
        super().train(mode)
        for view in self.views:
            view.train(mode)
        return self

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """``training.gradient_checkpointing``: recompute the shared encoder's activations in backward."""
        self.encoder.activation_checkpointing_enable(**kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, task: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> Any:
        if task is None:
            raise ValueError("a multi-task batch needs its 'task' index")
        index = int(task.reshape(-1)[0])
        if bool((task != index).any()):
            raise ValueError("a multi-task batch must hold rows of one task")
        return self.views[index](input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 labels=labels)


def load_encoder(model_path: str, vocab_rows: int | None = None) -> Any:
    """The shared encoder: ``AutoModel`` of ``model_path``, its embeddings resized to ``vocab_rows`` when tokens
    were added (RE's entity markers)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_path)
    if vocab_rows is not None and vocab_rows != encoder.get_input_embeddings().num_embeddings:
        encoder.resize_token_embeddings(vocab_rows)
    return encoder


def export_task(model: MultitaskModel, name: str, tokenizer: Any, directory: Path) -> Path:
    """Save task ``name`` as a plain HF model directory: a fresh model of its view's class holding the shared
    encoder's and the task head's weights, its labels and ``tokenizer``. Weights the class does not have (the
    pooler, for a token classifier) are left out; one it has and the view lacks would be a bug."""
    view = model.view(name)
    exported = type(view)(copy.deepcopy(view.config))
    missing, _ = exported.load_state_dict(view.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"exporting task {name!r}: the view has no weights for {missing[:5]}")
    exported.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
