"""``strategy.fewshot``: few-shot text classification the SetFit way (Tunstall et al. 2022, "Efficient Few-Shot
Learning Without Prompts"), on a sentence-transformers body.

Two stages, both seeded (the same seed gives the same model and the same predictions):

1. **Contrastive fine-tuning of the body.** In each of ``num_iterations`` rounds every example i gets one
   positive partner (shares a label) and one negative partner (shares none), drawn at random: ``2 R N`` pairs for
   N examples, half of them positive. A pair's target is the overlap of the two label sets,

       t_ij = |Y_i ∩ Y_j| / |Y_i ∪ Y_j|        (1 or 0 for single-label data),

   and the body learns to make the cosine similarity of the two embeddings equal it (sentence-transformers'
   ``CosineSimilarityLoss``): ``L = mean_batch (cos(e_i, e_j) - t_ij)^2``. Multi-label: a positive partner
   shares at least one label (target in (0, 1]), a negative one shares none (target 0). An example that is the
   only one of its label set is paired with itself; one whose labels every other example shares gets no
   negative pair.
2. **A head on the embeddings** (``head``): ``logistic`` fits scikit-learn's ``LogisticRegression`` on the
   embeddings of the tuned body (multinomial; one-vs-rest binary models for multi-label); ``differentiable``
   trains a linear layer with cross-entropy (multi-label: binary cross-entropy per label), end to end with the
   body at ``head_body_learning_rate`` (0 freezes the body).

``lr_decay`` (layer-wise learning-rate decay, Howard and Ruder 2018; Sun et al. 2019) applies to stage 1: the
top transformer layer trains at ``body_learning_rate``, layer i of L at ``body_learning_rate * d^(L-1-i)``, the
embeddings at ``body_learning_rate * d^L``. It lives here, not in ``strategy.layers``, because the body is
trained by this loop and not by the shared Trainer.

Where this differs from the ``setfit`` package, on purpose: the number of pairs is ``num_iterations`` per
example (setfit >= 1.0 defaults to every unique pair, oversampled to balance); embeddings are scaled to unit
length before the head (``normalize_embeddings``); and a text that occurs in several pairs of a batch is
embedded once per step (one forward pass over the batch's distinct texts; the same loss with fewer forward
passes, its occurrences share one dropout mask).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import DataError, ModelError, StrategyError
from adaptlab.runs import get_logger, progress_bar, seed_everything
from adaptlab.tuning.families import ENCODER_SEQUENCE
from adaptlab.tuning.fewshot_model import FewshotClassifier, FewshotHead
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.strategies.layers import depth_lr_factors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from adaptlab.tuning.encoder_fit import FitResult

Pair = tuple[int, int, float]
"""(example i, example j, target similarity t_ij)."""


class FewshotConfig(StrictModel):
    """SetFit-style few-shot classification: contrastive body fine-tuning, then a head on the embeddings."""

    num_iterations: int = Field(20, ge=1, description="rounds of pair generation: 2 pairs per example per round")
    body_epochs: int = Field(1, ge=1, description="passes over the pairs in the contrastive stage")
    body_learning_rate: float = Field(2e-5, gt=0, description="learning rate of the contrastive stage")
    batch_size: int = Field(16, ge=1, description="pairs per step (contrastive stage); examples per step (head)")
    warmup_steps: float = Field(0.1, ge=0, description="a step count, or below 1 a fraction of the body's steps")
    lr_decay: float | None = Field(
        None, gt=0, le=1, description="layer-wise decay of the body's learning rate in the contrastive stage "
                                      "(top layer x1, each layer below x lr_decay); none: one rate")
    head: Literal["logistic", "differentiable"] = Field(
        "logistic", description="logistic: scikit-learn LogisticRegression on the embeddings; differentiable: a "
                                "linear layer trained end to end with the body")
    head_learning_rate: float = Field(1e-2, gt=0, description="differentiable head: the linear layer's rate")
    head_body_learning_rate: float = Field(
        1e-5, ge=0, description="differentiable head: the body's rate while the head trains (0 freezes the body)")
    head_epochs: int = Field(16, ge=1, description="differentiable head: passes over the examples")
    examples_per_class: int | None = Field(
        None, ge=1, description="train on this many examples per label, drawn with the seed (none: all)")
    normalize_embeddings: bool = Field(True, description="scale embeddings to unit length before the head")
    max_length: int | None = Field(None, ge=8, description="truncate texts to this many tokens (none: the body's)")
    logging_steps: int = Field(10, ge=1, description="record the mean body loss every this many steps")
    seed: int | None = Field(None, description="seed of sampling, pairs and training (none: training.seed)")
    progress: bool = Field(True, description="progress bars on the console")


class Fewshot(Strategy):
    """Marks a classification run as few-shot; the recipe then trains with :func:`train_fewshot`."""

    name = "fewshot"

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        """Text classification only, and alone: :func:`train_fewshot` trains the body itself, so another
        strategy's hooks would silently not apply (layer-wise decay is ``strategy.fewshot.lr_decay``)."""
        if self.family != ENCODER_SEQUENCE:
            raise StrategyError(self.name, f"few-shot training builds a text classifier; it does not apply to "
                                           f"{self.family.task.replace('_', ' ')} (use it with 'cls train')")
        if others:
            hint = " (for layer-wise lr decay set strategy.fewshot.lr_decay)" if "layers" in others else ""
            raise StrategyError(self.name, f"trains its sentence-transformers body itself and cannot apply "
                                           f"strategy.{', strategy.'.join(sorted(others))}; remove it{hint}")

    def summary(self) -> dict[str, Any]:
        return self.config.model_dump()


register(FewshotConfig, Fewshot)


# ------------------------------------------------------------------------------------------------ data

def label_sets_of(train_labels: list[list[str]], labels: list[str], multi_label: bool) -> list[frozenset[str]]:
    """Each example's labels as a set, checked against ``labels`` (single-label: exactly one each)."""
    known = set(labels)
    sets = []
    for row, names in enumerate(train_labels, start=1):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise DataError(f"training example {row} has label {unknown[0]!r}, which is not one of {labels}")
        if not multi_label and len(names) != 1:
            raise DataError(f"training example {row} has {len(names)} labels; single-label data needs exactly one "
                            "(set multi_label for label sets)")
        sets.append(frozenset(names))
    return sets


def sample_per_class(label_sets: list[frozenset[str]], labels: list[str], per_class: int, seed: int) -> list[int]:
    """Indices of ``per_class`` examples of each label, drawn without replacement with ``seed``, sorted.

    Multi-label: the union of ``per_class`` examples drawn among those carrying each label (a label can end up
    with more, through examples drawn for another). A label with fewer examples is a :class:`DataError`.
    """
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in labels:
        having = [i for i, names in enumerate(label_sets) if label in names]
        if len(having) < per_class:
            raise DataError(f"strategy.fewshot.examples_per_class is {per_class}, but label {label!r} has only "
                            f"{len(having)} training examples; lower examples_per_class or add examples")
        chosen.update(rng.choice(having, size=per_class, replace=False).tolist())
    return sorted(chosen)


def contrastive_pairs(label_sets: list[frozenset[str]], num_iterations: int, rng: np.random.Generator) -> list[Pair]:
    """``num_iterations`` positive and negative partners per example, with Jaccard targets (module docstring)."""
    vocabulary = sorted(set().union(*label_sets))
    member = np.array([[name in names for name in vocabulary] for names in label_sets], dtype=np.float64)
    sizes = member.sum(axis=1)
    pairs: list[Pair] = []
    for i in range(len(label_sets)):
        shared = member @ member[i]
        union = sizes + sizes[i] - shared
        similarity = np.where(union > 0, shared / np.maximum(union, 1.0), 1.0)  # two empty sets are alike
        not_self = np.arange(len(label_sets)) != i
        positives = np.flatnonzero((similarity > 0) & not_self)
        positives = positives if positives.size else np.array([i])
        negatives = np.flatnonzero(similarity == 0)
        for partners in (positives, negatives):
            if partners.size:
                pairs.extend((i, int(j), float(similarity[j])) for j in rng.choice(partners, size=num_iterations))
    return pairs


# ------------------------------------------------------------------------------------------------ body

def load_body(model_path: str, max_length: int | None) -> SentenceTransformer:
    """The sentence-transformers body (a plain HF encoder gets mean pooling), on CUDA when available."""
    from sentence_transformers import SentenceTransformer

    try:
        body = SentenceTransformer(model_path, device="cuda" if torch.cuda.is_available() else "cpu")
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load {model_path!r} as a sentence-transformers body: {err}") from err
    if max_length is not None:
        body.max_seq_length = max_length
    return body


def embed_batch(body: SentenceTransformer, texts: list[str], normalize: bool = False) -> torch.Tensor:
    """Embeddings of ``texts`` with gradients (the body's mode decides dropout)."""
    features = {key: value.to(body.device) if isinstance(value, torch.Tensor) else value
                for key, value in body.preprocess(texts).items()}
    embeddings = body(features)["sentence_embedding"]
    return torch.nn.functional.normalize(embeddings, dim=-1) if normalize else embeddings


def layer_lr_factors(body: SentenceTransformer, decay: float) -> dict[int, float]:
    """``id(parameter) -> d^(L-1-i)`` for layer i of L, ``d^L`` for the embeddings, 1 for the rest."""
    transformer = body.transformers_model
    by_position = depth_lr_factors(len(ENCODER_SEQUENCE.layers(transformer)), decay)
    factors = {key: by_position[where] for key, where in ENCODER_SEQUENCE.positions(transformer).items()}
    return {id(p): factors.get(id(p), 1.0) for p in body.parameters()}


def body_param_groups(body: SentenceTransformer, config: FewshotConfig) -> list[dict[str, Any]]:
    """One optimizer group per learning-rate factor (a single group without ``lr_decay``)."""
    factors = layer_lr_factors(body, config.lr_decay) if config.lr_decay else {}
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for param in body.parameters():
        if param.requires_grad:
            groups.setdefault(factors.get(id(param), 1.0), []).append(param)
    return [{"params": params, "lr": config.body_learning_rate * factor}
            for factor, params in sorted(groups.items(), reverse=True)]


def train_body(body: SentenceTransformer, texts: list[str], pairs: list[Pair], config: FewshotConfig, seed: int,
               progress: Any) -> tuple[list[dict], int]:
    """Contrastive stage: ``CosineSimilarityLoss`` over shuffled pairs; returns (loss history, steps)."""
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
    from transformers import get_linear_schedule_with_warmup

    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = steps_per_epoch * config.body_epochs
    warmup = round(config.warmup_steps * total) if config.warmup_steps < 1 else int(config.warmup_steps)
    optimizer = torch.optim.AdamW(body_param_groups(body, config), lr=config.body_learning_rate, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    loss_fn = CosineSimilarityLoss(body)
    first, second = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    targets = torch.tensor([p[2] for p in pairs], dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    task = progress.add_task("few-shot: contrastive body", total=total)
    history, window, step = [], [], 0
    body.train()
    for _ in range(config.body_epochs):
        for batch in torch.randperm(len(pairs), generator=generator).split(config.batch_size):
            rows, where = torch.unique(torch.cat([first[batch], second[batch]]), return_inverse=True)
            embeddings = embed_batch(body, [texts[r] for r in rows.tolist()])
            pair_embeddings = [embeddings[where[:len(batch)]], embeddings[where[len(batch):]]]
            loss = loss_fn.compute_loss_from_embeddings(pair_embeddings, targets[batch].to(body.device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(body.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.append(loss.item())
            if step % config.logging_steps == 0 or step == total:
                history.append({"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": float(np.mean(window)),
                                "learning_rate": max(scheduler.get_last_lr())})
                window = []
            progress.advance(task)
    body.eval()
    return history, total


# ------------------------------------------------------------------------------------------------ head

def fit_logistic_head(embeddings: np.ndarray, member: np.ndarray, labels: list[str], multi_label: bool,
                      config: FewshotConfig) -> FewshotHead:
    """scikit-learn ``LogisticRegression`` (default C=1, lbfgs): multinomial, or one binary model per label.

    Fitted in float64, so the saved ``coef_`` / ``intercept_`` give scikit-learn's own probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    embeddings = embeddings.astype(np.float64)
    if multi_label:
        models = [LogisticRegression(max_iter=1000).fit(embeddings, member[:, k]) for k in range(len(labels))]
        weight = np.concatenate([m.coef_ for m in models])
        bias = np.concatenate([m.intercept_ for m in models])
    else:
        model = LogisticRegression(max_iter=1000).fit(embeddings, member.argmax(axis=1))
        weight, bias = model.coef_, model.intercept_
    return FewshotHead("logistic", labels, multi_label, config.normalize_embeddings, weight, bias)


def fit_differentiable_head(body: SentenceTransformer, texts: list[str], member: np.ndarray, labels: list[str],
                            multi_label: bool, config: FewshotConfig, seed: int, progress: Any) -> FewshotHead:
    """A linear layer on the embeddings, trained with the body (cross-entropy, or BCE per label)."""
    torch.manual_seed(seed)
    linear = torch.nn.Linear(body.get_embedding_dimension(), len(labels)).to(body.device)
    groups = [{"params": list(linear.parameters()), "lr": config.head_learning_rate}]
    end_to_end = config.head_body_learning_rate > 0
    if end_to_end:
        groups.append({"params": [p for p in body.parameters() if p.requires_grad],
                       "lr": config.head_body_learning_rate})
        body.train()
    else:
        with torch.no_grad():
            frozen = embed_batch(body, texts, config.normalize_embeddings)
    targets = torch.tensor(member, dtype=torch.float32, device=body.device)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    task = progress.add_task("few-shot: head", total=config.head_epochs)
    for _ in range(config.head_epochs):
        for batch in torch.randperm(len(texts), generator=generator).split(config.batch_size):
            features = embed_batch(body, [texts[i] for i in batch.tolist()], config.normalize_embeddings) \
                if end_to_end else frozen[batch.to(body.device)]
            logits = linear(features)
            target = targets[batch.to(body.device)]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) if multi_label \
                else torch.nn.functional.cross_entropy(logits, target.argmax(dim=1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        progress.advance(task)
    body.eval()
    state = {name: tensor.detach().cpu().numpy() for name, tensor in linear.state_dict().items()}
    return FewshotHead("differentiable", labels, multi_label, config.normalize_embeddings,
                       state["weight"], state["bias"])


def check_head_data(member: np.ndarray, labels: list[str], multi_label: bool) -> None:
    """Every label needs an example (and, multi-label, an example without it) for the head to learn it."""
    if not multi_label and len(labels) < 2:
        raise DataError(f"single-label classification needs at least two labels, not {labels}")
    for k, label in enumerate(labels):
        count = int(member[:, k].sum())
        if count == 0:
            raise DataError(f"label {label!r} has no training example; a few-shot head needs at least one per label")
        if multi_label and count == len(member):
            raise DataError(f"label {label!r} is on every training example; a one-vs-rest head needs examples "
                            "without it too")


# ------------------------------------------------------------------------------------------------ entry point

def train_fewshot(train_texts: list[str], train_labels: list[list[str]], labels: list[str], multi_label: bool,
                  model_path: str, config: FewshotConfig, seed: int, output_dir: Path) -> FitResult:
    """Train a few-shot classifier (module docstring) and save it to ``output_dir / "model"``.

    ``train_labels[i]`` is the label list of ``train_texts[i]`` (one label unless ``multi_label``); ``labels`` fixes
    the order of the probability columns. ``config.seed`` overrides ``seed`` when set. The model directory is
    read by :class:`adaptlab.tuning.fewshot_model.FewshotClassifier`.
    """
    from adaptlab.tuning.encoder_fit import FitResult

    seed = config.seed if config.seed is not None else seed
    label_sets = label_sets_of(train_labels, labels, multi_label)
    chosen = (sample_per_class(label_sets, labels, config.examples_per_class, seed) if config.examples_per_class
              else list(range(len(train_texts))))
    texts = [train_texts[i] for i in chosen]
    member = np.array([[label in label_sets[i] for label in labels] for i in chosen], dtype=np.float64)
    check_head_data(member, labels, multi_label)
    pairs = contrastive_pairs([label_sets[i] for i in chosen], config.num_iterations, np.random.default_rng(seed))
    seed_everything(seed)
    body = load_body(model_path, config.max_length)
    started = time.perf_counter()
    with progress_bar(config.progress) as progress:
        history, steps = train_body(body, texts, pairs, config, seed, progress)
        if config.head == "logistic":
            embeddings = body.encode(texts, batch_size=64, show_progress_bar=False,
                                     normalize_embeddings=config.normalize_embeddings)
            head = fit_logistic_head(embeddings, member, labels, multi_label, config)
        else:
            head = fit_differentiable_head(body, texts, member, labels, multi_label, config, seed, progress)
    seconds = time.perf_counter() - started
    model_dir = FewshotClassifier(body, head).save(Path(output_dir) / "model")
    positive = sum(1 for pair in pairs if pair[2] > 0)
    summary = {"examples": len(texts), "sampled_per_class": config.examples_per_class, "pairs": len(pairs),
               "positive_pairs": positive, "negative_pairs": len(pairs) - positive, "steps": steps,
               "head": config.head, "lr_decay": config.lr_decay, "seed": seed}
    get_logger().info("few-shot: %d examples, %d pairs, %d steps, %s head, %.1fs; saved to %s",
                      len(texts), len(pairs), steps, config.head, seconds, model_dir)
    return FitResult(model_dir, history, {}, seconds, {"fewshot": summary})
