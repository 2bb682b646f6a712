"""``adaptlab fractal sft``: fine-tune a causal LM on responses, each token's loss weighted by its sentence's score.

Why: ``fractal score`` says which sentences of a response are good. Plain SFT would teach the bad
sentences as eagerly as the good ones; here each response token's cross-entropy is scaled by the
FRACTAL score of its sentence (``mode: weight``), or sentences scoring below ``threshold`` are masked
out (``mode: mask``). The loss (:func:`adaptlab.fractal.use.weighted_causal_lm_loss`) is

    L = sum_t w_t * CE_t / sum_t w_t        over the response tokens t of a batch,

with ``w_t = score(sentence(t))`` (weight) or ``w_t = [score(sentence(t)) >= threshold]`` (mask).

Read top to bottom: join the scores JSONL (``{"id", "sentences", "scores"}``) with the bags JSONL
(``{"id", "context", "response"|"sentences"}``) by id -> render each prompt (the context through the
tokenizer's chat template when it has one, else ``prompt_template``) -> tokenise and weight with
:func:`~adaptlab.fractal.use.token_weights` -> append EOS -> truncate -> train with
:class:`~adaptlab.fractal.use.WeightedSFTTrainer` -> write the run directory.

Rules (an error names the file:line and record id; whatever is skipped or cut is counted in ``metrics.json``):

- an id on only one side of the join is a :class:`DataError` giving the count and examples on each side;
- a scored sentence not found, in order, in its bag's response text is a :class:`DataError`;
- a bag given as ``sentences`` only has no response text; its response is the sentences joined by spaces;
- EOS teaches the model to stop: the EOS id is appended as a target of weight 1 (a tokenizer that already
  ends sequences with EOS has that token made a target instead of getting a second one). It is appended
  as an id rather than as text so it never depends on how a special-token string is split;
- sequences longer than ``max_length`` tokens are cut from the right (counted; the EOS is then lost too);
- an example in which no sentence token keeps a positive weight (all masked, all scored 0, or cut off by
  truncation) has nothing to learn and is skipped (counted); when no example is left it is an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from adaptlab.config import StrictModel, save_config
from adaptlab.data.records import iter_json_lines
from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.fractal.bags import read_bags
from adaptlab.fractal.use import (
    IGNORE_INDEX,
    WeightedSFTCollator,
    WeightedSFTTrainer,
    locate_sentences,
    mask_below,
    token_weights,
)
from adaptlab.fractal.view import scored_responses_html
from adaptlab.lm.loading import load_tokenizer
from adaptlab.lm.train import history_from_log, pad_token_id
from adaptlab.models.gguf import resolve_model
from adaptlab.report import plots
from adaptlab.report.html import Image, KeyValues, Paragraph, RawHTML, Section, write_report
from adaptlab.runs import RunDir, atomic_write_json, create_run_dir, get_logger, seed_everything


class SFTTrainingConfig(StrictModel):
    """Trainer hyperparameters (mapped onto ``transformers.TrainingArguments``)."""

    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.03, ge=0, lt=1, description="fraction of training steps with linear warm-up")
    scheduler: str = "linear"
    max_grad_norm: float = Field(1.0, gt=0)
    activation_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")
    bf16: bool = Field(False, description="bf16 mixed precision (on a GPU that supports it)")
    seed: int = 42
    logging_steps: int = Field(10, ge=1)
    progress: bool = True


class FractalSFTConfig(StrictModel):
    """Config of ``adaptlab fractal sft`` (see configs/fractal_sft.yaml)."""

    name: str = "fractal-sft"
    model: str | None = Field(None, description="causal LM to fine-tune: HF name or local directory")
    scores: str | None = Field(None, description="'adaptlab fractal score' output: {id, sentences, scores} JSONL")
    bags: str | None = Field(None, description="the bags JSONL that was scored: {id, context, response|sentences}")
    output: str | None = None
    mode: Literal["weight", "mask"] = Field("weight", description="weight tokens by score, or mask low sentences")
    threshold: float = Field(0.5, ge=0, le=1, description="mode mask: sentences scoring below it are masked")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="chat: the tokenizer's chat template; plain: prompt_template; auto: chat if it has one")
    prompt_template: str = Field("{context}\n\n", description="plain prompt text; {context} is replaced")
    system_prompt: str | None = Field(None, description="chat format: a system message before the context")
    append_eos: bool = Field(True, description="append EOS to each response so the model learns to stop")
    eos_token: str | None = Field(None, description="default: the tokenizer's eos_token (else its sep_token)")
    max_length: int = Field(1024, ge=8, description="tokens per sequence; longer ones are cut and counted")
    training: SFTTrainingConfig = SFTTrainingConfig()

    @field_validator("prompt_template")
    @classmethod
    def _has_context_slot(cls, value: str) -> str:
        if "{context}" not in value:
            raise ValueError("prompt_template must contain {context}, where the bag's context goes")
        return value


@dataclass
class ScoredResponse:
    """One training example before tokenisation: a bag's prompt and response joined with its sentence scores."""

    id: str
    context: str | None
    response: str
    sentences: list[str]
    scores: list[float]
    offsets: list[tuple[int, int]]


# ------------------------------------------------------------------------------------------------ joining


def _score_line(obj: Any) -> tuple[str, list[str], list[float]]:
    """The id, sentences and scores of one scores line; ValueError says what is wrong."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ValueError('each line must be an object {"id": str, "sentences": [str], "scores": [number]}')
    sentences, scores = obj.get("sentences"), obj.get("scores")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise ValueError("'sentences' must be a list of strings")
    if not isinstance(scores, list) or len(scores) != len(sentences):
        raise ValueError(f"'scores' must be a list with one score per sentence ({len(sentences)})")
    for i, value in enumerate(scores):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"scores[{i}] = {value!r} is not a number in [0, 1]")
    return obj["id"], sentences, [float(v) for v in scores]


def _missing(what: str, ids: list[str], where: str) -> str:
    shown = ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    return f"{len(ids)} {what} {where} ({shown})"


def join_scores_and_bags(scores_path: str, bags_path: str) -> tuple[list[ScoredResponse], dict]:
    """One :class:`ScoredResponse` per scores line (in that order), its prompt and response text from the bags file.

    Every id must be on both sides, and each scored sentence must be found, in order, in its response text.
    """
    bags, pairs = read_bags(bags_path)
    by_id = {bag.id: bag for bag in bags}
    scored: list[tuple[int, str, list[str], list[float]]] = []
    first_line: dict[str, int] = {}
    for line, obj in iter_json_lines(scores_path):
        try:
            record_id, sentences, scores = _score_line(obj)
        except ValueError as exc:
            raise DataError(str(exc), scores_path, line) from None
        if record_id in first_line:
            raise DataError(f"record {record_id!r}: duplicate id (first on line {first_line[record_id]})",
                            scores_path, line)
        first_line[record_id] = line
        scored.append((line, record_id, sentences, scores))
    no_bag = [record_id for _, record_id, _, _ in scored if record_id not in by_id]
    no_scores = [bag.id for bag in bags if bag.id not in first_line]
    if no_bag or no_scores:
        problems = ([_missing("scored ids have no bag", no_bag, f"in {bags_path}")] if no_bag else []) + (
            [_missing("bags have no scores", no_scores, f"in {scores_path}")] if no_scores else [])
        raise DataError("; ".join(problems) + ". The scores must come from `adaptlab fractal score --input` on "
                        "this bags file; remove the extra records from one side or score the bags again")
    items: list[ScoredResponse] = []
    joined = 0
    for line, record_id, sentences, scores in scored:
        bag = by_id[record_id]
        response = bag.response if bag.response is not None else " ".join(bag.sentences)
        joined += bag.response is None
        try:
            offsets = locate_sentences(response, sentences)
        except DataError as exc:
            raise DataError(f"record {record_id!r}: {exc}; these scores do not belong to this bag's response "
                            f"in {bags_path}", scores_path, line) from None
        items.append(ScoredResponse(record_id, bag.context, response, sentences, scores, offsets))
    stats = {"bags": len(bags), "pairs_not_used": len(pairs), "responses_joined_from_sentences": joined,
             "without_context": sum(item.context is None for item in items)}
    return items, stats


# ------------------------------------------------------------------------------------------- tokenisation


def render_prompt(tokenizer: Any, context: str | None, cfg: FractalSFTConfig) -> str:
    """The prompt text before the response: the chat template's user turn, or ``prompt_template``.

    A null context is an empty user turn (chat) or no prompt at all (plain). A chat template that writes
    the token the tokenizer adds by itself (usually BOS) has that text removed, so it is not doubled.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if cfg.prompt_format == "chat" and not has_template:
        raise ConfigError("prompt_format=chat but the tokenizer has no chat_template; use prompt_format=plain")
    if cfg.prompt_format == "plain" or not has_template:
        return cfg.prompt_template.replace("{context}", context) if context is not None else ""
    messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []) + [
        {"role": "user", "content": context or ""}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    added = tokenizer("")["input_ids"]
    first_added = tokenizer.convert_ids_to_tokens(added[0]) if added else None
    if first_added and prompt.startswith(first_added):
        prompt = prompt[len(first_added):]
    return prompt


def resolve_eos_id(tokenizer: Any, cfg: FractalSFTConfig) -> int | None:
    """The token id appended to teach stopping, or None when ``append_eos`` is off."""
    if not cfg.append_eos:
        return None
    token = cfg.eos_token or tokenizer.eos_token or getattr(tokenizer, "sep_token", None)
    if not token:
        raise ConfigError("the tokenizer has no eos_token: set eos_token=... (the token that ends a response), "
                          "or append_eos=false")
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ConfigError(f"eos_token={token!r} is not a token of this tokenizer")
    return int(token_id)


def build_examples(tokenizer: Any, items: list[ScoredResponse], cfg: FractalSFTConfig,
                   progress: bool = False) -> tuple[list[dict], dict, list[int]]:
    """Tokenised ``{"input_ids", "labels", "weights"}`` examples, their counts, and the kept items' indices.

    Token weights come from :func:`token_weights` in weight mode (each response token gets its sentence's
    score; which tokens are the response is known only there); mask mode then keeps a token (weight 1) when
    its score is >= ``threshold`` and masks it (label -100, weight 0) otherwise. The counts are over the
    response tokens (EOS included) of every example after truncation, skipped ones too: ``masked_token_share``
    is the share of them with weight 0, ``mean_weight`` their mean weight.
    """
    eos_id = resolve_eos_id(tokenizer, cfg)
    examples: list[dict] = []
    kept: list[int] = []
    counts = {"examples": 0, "skipped_nothing_to_learn": 0, "truncated": 0, "truncated_response_tokens": 0,
              "response_tokens": 0, "masked_response_tokens": 0}
    weight_sum = 0.0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        for index, item in enumerate(bar.track(items, description="tokenising")):
            prompt = render_prompt(tokenizer, item.context, cfg)
            ids, labels, weights = token_weights(tokenizer, prompt, item.response, item.offsets, item.scores)
            eos_at = None
            if eos_id is not None:
                if ids and ids[-1] == eos_id and labels[-1] == IGNORE_INDEX:  # the tokenizer adds EOS itself
                    labels[-1], weights[-1] = eos_id, 1.0
                else:
                    ids, labels, weights = ids + [eos_id], labels + [eos_id], weights + [1.0]
                eos_at = len(ids) - 1
            is_response = [label != IGNORE_INDEX for label in labels]
            if cfg.mode == "mask":
                labels, weights = mask_below(labels, weights, cfg.threshold)
            if len(ids) > cfg.max_length:
                counts["truncated"] += 1
                counts["truncated_response_tokens"] += sum(is_response[cfg.max_length:])
                ids, labels, weights = ids[: cfg.max_length], labels[: cfg.max_length], weights[: cfg.max_length]
                is_response = is_response[: cfg.max_length]
            counts["response_tokens"] += sum(is_response)
            counts["masked_response_tokens"] += sum(r and w == 0.0 for r, w in zip(is_response, weights))
            weight_sum += sum(w for r, w in zip(is_response, weights) if r)
            if not any(w > 0 and labels[t] != IGNORE_INDEX and t != eos_at for t, w in enumerate(weights)):
                counts["skipped_nothing_to_learn"] += 1
                continue
            examples.append({"input_ids": ids, "labels": labels, "weights": weights})
            kept.append(index)
    tokens = max(counts["response_tokens"], 1)
    counts.update(examples=len(examples), masked_token_share=counts["masked_response_tokens"] / tokens,
                  mean_weight=weight_sum / tokens)
    return examples, counts, kept


# ---------------------------------------------------------------------------------------------- training


def load_causal_lm(name: str, examples: list[dict]) -> Any:
    """The model in float32 (mixed precision comes from ``training.bf16``); checks it knows every token id."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a causal language model from model={name!r} ({exc})") from None
    vocabulary = model.get_input_embeddings().num_embeddings
    largest = max(max(example["input_ids"]) for example in examples)
    if largest >= vocabulary:
        raise ModelError(f"the tokenizer produces token id {largest} but the model {name!r} has only {vocabulary} "
                         "embeddings; use the tokenizer saved with this model")
    return model


def training_arguments(cfg: SFTTrainingConfig, output_dir: str) -> Any:
    """TrainingArguments for weighted SFT: no evaluation, no checkpoints, keep the ``weights`` column."""
    import torch
    from transformers import TrainingArguments

    if cfg.bf16 and not torch.cuda.is_available():
        get_logger().warning("training.bf16=true ignored: no CUDA device; training in float32")
    return TrainingArguments(
        output_dir=output_dir,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup,  # a float < 1 is a fraction of the training steps in transformers 5
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        activation_checkpointing=cfg.activation_checkpointing,
        bf16=cfg.bf16 and torch.cuda.is_available(),
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not cfg.progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def sft(cfg: FractalSFTConfig) -> tuple[RunDir, dict]:
    """Weighted SFT from FRACTAL scores; returns the run directory (``model/`` holds model + tokenizer) and metrics."""
    for key, flag in (("model", "--model"), ("scores", "--scores"), ("bags", "--bags")):
        if not getattr(cfg, key):
            raise ConfigError(f"no {key}: pass {flag} or set '{key}' in the config")
    items, data_stats = join_scores_and_bags(cfg.scores, cfg.bags)
    tokenizer = load_tokenizer(cfg.model, "model")
    examples, counts, kept = build_examples(tokenizer, items, cfg, progress=cfg.training.progress)
    if not examples:
        rule = (f"every sentence scores below threshold={cfg.threshold}" if cfg.mode == "mask"
                else "every sentence scores 0")
        raise DataError(f"nothing to train on: none of the {len(items)} examples has a sentence token with a "
                        f"positive weight (mode={cfg.mode}: {rule}, or truncation at max_length={cfg.max_length} "
                        "cut them off); lower the threshold, use mode=weight or raise max_length")
    seed_everything(cfg.training.seed)
    model = load_causal_lm(cfg.model, examples)
    run = create_run_dir(cfg.output, cfg.name)
    save_config(cfg, run.config)
    log = get_logger()
    log.info("weighted SFT of %s on %d examples (%d skipped, %d truncated) in %s", cfg.model, len(examples),
             counts["skipped_nothing_to_learn"], counts["truncated"], run.path)

    trainer = WeightedSFTTrainer(model=model, args=training_arguments(cfg.training, str(run.path)),
                                 train_dataset=examples, data_collator=WeightedSFTCollator(pad_token_id(tokenizer)),
                                 processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(run.model))
    history = history_from_log(trainer.state.log_history)
    sentence_scores = [s for item in items for s in item.scores]
    metrics = {
        "data": {**data_stats, "scored_responses": len(items), "sentences": len(sentence_scores),
                 "sentences_below_threshold": sum(s < cfg.threshold for s in sentence_scores)},
        "counts": counts,
        "train_steps": trainer.state.global_step,
        "train_seconds": round(seconds, 2),
        "final_loss": history[-1]["loss"] if history else None,
        "history": history,
    }
    atomic_write_json(run.metrics, metrics)
    shown = [{"id": items[i].id, "context": items[i].context, "sentences": items[i].sentences,
              "scores": items[i].scores} for i in kept[:10]]
    write_report(run.report, f"FRACTAL-weighted SFT: {cfg.name}", report_sections(cfg, metrics, sentence_scores, shown))
    log.info("saved the model to %s after %.1f s", run.model, seconds)
    return run, metrics


# ------------------------------------------------------------------------------------------------ report


def training_figure(history: list[dict], sentence_scores: list[float], threshold: float | None) -> bytes:
    """Two panels: training loss per step, and the histogram of sentence scores (mask threshold as a line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.2), dpi=plots.DPI, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, score_ax = fig.subplots(1, 2)
    loss_ax.plot([e["step"] for e in history], [e["loss"] for e in history], marker="o" if len(history) <= 30
                 else None, markersize=3)
    loss_ax.set(xlabel="optimizer step", ylabel="weighted loss", title="training loss")
    loss_ax.grid(alpha=0.3)
    score_ax.hist(sentence_scores, bins=20, range=(0.0, 1.0), color="#4c72b0")
    if threshold is not None:
        score_ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"mask threshold {threshold:g}")
        score_ax.legend(fontsize=8)
    score_ax.set(xlabel="FRACTAL sentence score", ylabel="sentences", title="sentence scores")
    return plots.figure_to_png(fig)


def report_sections(cfg: FractalSFTConfig, metrics: dict, sentence_scores: list[float],
                    shown: list[dict]) -> list[Section]:
    how = ("each response token's loss is weighted by its sentence's score" if cfg.mode == "weight" else
           f"sentences scoring below {cfg.threshold:g} are masked out of the loss")
    figure = training_figure(metrics["history"], sentence_scores, cfg.threshold if cfg.mode == "mask" else None)
    return [
        Section("Training", [
            Paragraph(f"Model {cfg.model}, mode {cfg.mode}: {how}. Loss = sum_t w_t CE_t / sum_t w_t over the "
                      f"response tokens; {metrics['train_steps']} steps in {metrics['train_seconds']} s."),
            Image(figure, alt="training loss and sentence score histogram"),
            KeyValues({k.replace("_", " "): v for k, v in metrics["counts"].items()}, caption="tokens and examples"),
            KeyValues({k.replace("_", " "): v for k, v in metrics["data"].items()}, caption="input data"),
        ]),
        Section("Training examples", [
            Paragraph("Sentences coloured by the score that weights them (first trained examples)."),
            RawHTML(scored_responses_html(shown, limit=10)),
        ]),
    ]
