"""``adaptlab fractal sft``: fine-tune a causal LM on responses, each token's loss weighted by its sentence's score.

Why: ``fractal score`` says which sentences of a response are good. Plain SFT would teach the bad
sentences as eagerly as the good ones; here each response token's cross-entropy is scaled by the
FRACTAL score of its sentence (``mode: weight``), or sentences scoring below ``threshold`` get weight 0
and are masked out (``mode: mask``, weights 0 or 1). The loss of an optimizer step is

    L = sum_t w_t * CE_t / sum_t w_t        over the target tokens t of the whole accumulated batch,

with ``w_t = score(sentence(t))`` (weight) or ``w_t = [score(sentence(t)) >= threshold]`` (mask), and 1 for the
token(s) that end the response.

Read top to bottom: join the scores JSONL (``{"id", "sentences", "scores"}``) with the bags JSONL
(``{"id", "context", "response"|"sentences"}``) by id -> one SFT example per scored response, its sentences as
weighted spans of the response (:mod:`adaptlab.lm.sft_examples`) -> an optional held-out share
(``eval_fraction``) -> the SFT path of ``adaptlab lm train`` (:mod:`adaptlab.lm.sft_data`, then
:func:`adaptlab.lm.fit.fit`: the ``strategy:`` block, held-out perplexity, marked checkpoints and exact resume
with ``resume: auto``) -> the run directory.

Rules (an error names the file:line and record id; whatever is skipped or cut is counted in ``metrics.json``):

- an id on only one side of the join is a :class:`DataError` giving the count and examples on each side;
- a scored sentence not found, in order, in its bag's response text is a :class:`DataError`;
- a bag given as ``sentences`` only has no response text; its response is the sentences joined by spaces;
- the chat format (``prompt_format: chat``, or ``auto`` with a tokenizer that has a chat template) is
  ``[system_prompt,] user: context, assistant: response``: the template's own end-of-turn token ends the
  response. The plain format is ``[BOS] prompt_template(context) response [EOS]``. Either ending is a target of
  weight 1, so the model learns to stop;
- a token belongs to the first sentence that ends after the token starts (whitespace between sentences takes
  the following sentence's weight);
- sequences longer than ``max_length`` tokens are cut from the right (counted; the ending is then lost too);
- a response whose sentences all weigh 0 (all masked, or all scored 0) has nothing to learn, not even its
  ending, and is skipped (counted); truncation that leaves no target skips an example too; when no example is
  left it is an error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.fractal.bags import read_bags
from adaptlab.fractal.use import locate_sentences
from adaptlab.fractal.view import scored_responses_html
from adaptlab.lm.fit import check_settings, fit, training_run
from adaptlab.lm.loading import load_tokenizer
from adaptlab.lm.sft_data import check_tokenizer, encode_examples
from adaptlab.lm.sft_examples import SFTExample, parse_example
from adaptlab.lm.train import (
    CausalTrainingConfig,
    LMTrainerSettings,
    TrainingData,
    processes_on_cpu,
    warn_about_cuts,
)
from adaptlab.models.checks import check_local_model
from adaptlab.models.gguf import resolve_model
from adaptlab.report import plots
from adaptlab.report.html import Image, KeyValues, Paragraph, RawHTML, Section, Table
from adaptlab.runs import RunDir, get_logger

REMOVED = {
    "append_eos": "every response now ends as the model will end it: with the chat template's end-of-turn token "
                  "(chat format) or the tokenizer's EOS (plain format), always a target of weight 1",
    "eos_token": "the chat format ends a response with the template's end-of-turn token, the plain format with the "
                 "tokenizer's eos_token (else its sep_token)",
}


class FractalTrainerSettings(LMTrainerSettings):
    """``training:`` of ``fractal sft``: 2e-5, 3 epochs, batch 4, linear decay after a 3% warm-up, no decay."""

    num_train_epochs: float = Field(3.0, gt=0, description="passes over the scored responses")
    per_device_train_batch_size: int = Field(4, ge=1, description="responses per device per forward pass")
    warmup_steps: float = Field(0.03, ge=0, description="a step count, or below 1 a fraction of the training steps")
    lr_scheduler_type: str = Field("linear", description="any transformers scheduler: linear, cosine, constant, ...")
    min_lr_rate: float | None = Field(None, ge=0, lt=1, description="cosine only: decay to this fraction")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (decoupled)")


class FractalSFTConfig(CausalTrainingConfig):
    """Config of ``adaptlab fractal sft`` (shipped example: ``adaptlab config show fractal_sft``); the training
    keys are lm train's."""

    name: str = Field("fractal-sft", description="names the run directory runs/<time>-<name> when output is not given")
    scores: str | None = Field(None, description="'adaptlab fractal score' output: {id, sentences, scores} JSONL")
    bags: str | None = Field(None, description="the bags JSONL that was scored: {id, context, response|sentences}")
    mode: Literal["weight", "mask"] = Field("weight", description="weight tokens by score, or mask low sentences")
    threshold: float = Field(0.5, ge=0, le=1, description="mode mask: sentences scoring below it are masked")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="chat: the tokenizer's chat template; plain: prompt_template; auto: chat if it has one")
    prompt_template: str = Field("{context}\n\n", description="plain prompt text; {context} is replaced")
    system_prompt: str | None = Field(None, description="chat format: a system message before the context")
    max_length: int = Field(1024, ge=8, description="tokens per sequence; longer ones are cut and counted")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of the scored responses held out for "
                                                               "perplexity (chosen with training.seed)")
    training: FractalTrainerSettings = Field(
        default_factory=FractalTrainerSettings, description="Trainer settings, in the HF Trainer's names (fractal "
        "sft's defaults)")

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in REMOVED.items():
                if key in data:
                    raise ConfigError(f"'{key}' was removed: {why}; delete it from the config")
        return data

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
    line: int  # of the scores file


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
        items.append(ScoredResponse(record_id, bag.context, response, sentences, scores, offsets, line))
    stats = {"bags": len(bags), "pairs_not_used": len(pairs), "responses_joined_from_sentences": joined,
             "without_context": sum(item.context is None for item in items)}
    return items, stats


# --------------------------------------------------------------------------------------------- examples


def uses_chat(tokenizer: Any, cfg: FractalSFTConfig) -> bool:
    """The chat format when asked for, or (``auto``) when the tokenizer has a chat template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if cfg.prompt_format == "chat" and not has_template:
        raise ConfigError("prompt_format=chat but the tokenizer has no chat_template; use prompt_format=plain")
    return has_template and cfg.prompt_format != "plain"


def scored_example(item: ScoredResponse, cfg: FractalSFTConfig, chat: bool) -> dict[str, Any]:
    """The SFT example of one scored response (:mod:`adaptlab.lm.sft_examples`): its sentences as weighted spans.

    A null context is an empty user turn (chat) or no prompt at all (plain).
    """
    weights = [{"start": start, "end": end,
                "weight": score if cfg.mode == "weight" else float(score >= cfg.threshold)}
               for (start, end), score in zip(item.offsets, item.scores, strict=True) if end > start]
    if not chat:
        prompt = cfg.prompt_template.replace("{context}", item.context) if item.context is not None else ""
        return {"prompt": prompt, "completion": item.response, "weights": weights}
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return {"messages": [*system, {"role": "user", "content": item.context or ""},
                         {"role": "assistant", "content": item.response, "weights": weights}]}


def scored_examples(tokenizer: Any, items: list[ScoredResponse], cfg: FractalSFTConfig) -> list[SFTExample]:
    chat = uses_chat(tokenizer, cfg)
    return [parse_example(scored_example(item, cfg, chat), (Path(cfg.scores or "<scores>"), item.line))
            for item in items]


def held_out(count: int, fraction: float, seed: int) -> set[int]:
    """Indices of the ``round(fraction * count)`` (at least 1) responses held out, chosen with ``seed``."""
    if fraction == 0:
        return set()
    order = list(range(count))
    random.Random(seed).shuffle(order)
    size = max(1, round(fraction * count))
    if size >= count:
        raise ConfigError(f"eval_fraction={fraction} holds out all {count} scored responses; lower it so that "
                          "some are left to train on")
    return set(order[:size])


def training_data(tokenizer: Any, items: list[ScoredResponse], cfg: FractalSFTConfig,
                  source: str) -> tuple[TrainingData, set[int]]:
    """The encoded training rows and held-out split, and the indices of the held-out items."""
    import datasets

    examples = scored_examples(tokenizer, items, cfg)
    check_tokenizer(tokenizer, examples, source)
    held = held_out(len(items), cfg.eval_fraction, cfg.training.seed)
    train = [example for i, example in enumerate(examples) if i not in held]
    rows, stats = encode_examples(tokenizer, train, cfg.max_length, "tokenising")
    if not rows:
        rule = (f"every sentence scores below threshold={cfg.threshold}" if cfg.mode == "mask"
                else "every sentence scores 0")
        raise DataError(f"nothing to train on: none of the {len(train)} examples has a sentence token with a "
                        f"positive weight (mode={cfg.mode}: {rule}, or truncation at max_length={cfg.max_length} "
                        "cut them off); lower the threshold, use mode=weight or raise max_length")
    data = TrainingData(datasets.Dataset.from_list(rows), {}, {"train": stats.as_dict()})
    if held:
        eval_rows, eval_stats = encode_examples(tokenizer, [examples[i] for i in sorted(held)], cfg.max_length)
        data.stats["held_out"] = eval_stats.as_dict()
        if eval_rows:
            data.evals["held_out"] = datasets.Dataset.from_list(eval_rows)
    warn_about_cuts(data.stats, cfg.max_length)
    return data, held


def weight_counts(stats: dict[str, Any]) -> dict[str, Any]:
    """The training split's counts, and over its response tokens: the share with weight 0 and the mean weight."""
    response = max(stats["target_tokens"] + stats["zero_weight_tokens"], 1)
    return {**stats, "skipped_nothing_to_learn": stats["skipped_all_weights_zero"]
            + stats["skipped_no_target_after_truncation"],
            "masked_token_share": stats["zero_weight_tokens"] / response, "mean_weight": stats["weight_sum"] / response}


# ---------------------------------------------------------------------------------------------- training


def sft(cfg: FractalSFTConfig) -> tuple[RunDir, dict]:
    """Weighted SFT from FRACTAL scores; returns the run directory (``model/`` holds model + tokenizer) and metrics."""
    from accelerate import PartialState

    for key, flag in (("model", "--model"), ("scores", "--scores"), ("bags", "--bags")):
        if not getattr(cfg, key):
            raise ConfigError(f"no {key}: pass {flag} or set '{key}' in the config")
    check_settings(cfg)
    state = PartialState(cpu=processes_on_cpu())
    items, data_stats = join_scores_and_bags(cfg.scores, cfg.bags)
    model_dir = resolve_model(cfg.model, "model")
    check_local_model(model_dir, "causal_lm")
    tokenizer = load_tokenizer(model_dir, "model")
    data, held = training_data(tokenizer, items, cfg, model_dir)

    with training_run(cfg, state) as (run, checkpoint):
        get_logger().info("weighted SFT of %s on %d examples (%d held out) in %s%s", cfg.model, len(data.train),
                          len(held), run.path, f", resuming from {checkpoint}" if checkpoint else "")
        trained = fit(cfg, run, checkpoint, model_dir, tokenizer, model_dir, data, state)
        sentence_scores = [s for item in items for s in item.scores]
        metrics = {
            "model": cfg.model,
            "data": {**data_stats, "scored_responses": len(items), "sentences": len(sentence_scores),
                     "sentences_below_threshold": sum(s < cfg.threshold for s in sentence_scores),
                     "held_out_ids": [items[i].id for i in sorted(held)]},
            "counts": weight_counts(data.stats["train"]), "held_out_counts": data.stats.get("held_out"),
            **trained,
        }
        if state.is_main_process:
            shown = [{"id": item.id, "context": item.context, "sentences": item.sentences, "scores": item.scores}
                     for i, item in enumerate(items) if i not in held][:10]
            run.finish(metrics, f"FRACTAL-weighted SFT: {cfg.name}",
                       report_sections(cfg, metrics, sentence_scores, shown))
    return run, metrics


# ------------------------------------------------------------------------------------------------ report


@plots.drawn
def score_histogram_png(sentence_scores: list[float], threshold: float | None) -> bytes:
    """The histogram of sentence scores, with the mask threshold as a line."""
    fig = plots.new_figure(4.5, 3.2)
    ax = fig.subplots()
    ax.hist(sentence_scores, bins=20, range=(0.0, 1.0), color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"mask threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set(xlabel="FRACTAL sentence score", ylabel="sentences", title="sentence scores")
    return plots.figure_to_png(fig)


def report_sections(cfg: FractalSFTConfig, metrics: dict, sentence_scores: list[float],
                    shown: list[dict]) -> list[Section]:
    how = ("each response token's loss is weighted by its sentence's score" if cfg.mode == "weight" else
           f"sentences scoring below {cfg.threshold:g} are masked out of the loss")
    history = metrics["history"]
    sections = [
        Section("Training", [
            Paragraph(f"Model {cfg.model}, mode {cfg.mode}: {how}. Loss = sum_t w_t CE_t / sum_t w_t over the "
                      f"response tokens of each optimizer step; {metrics['steps']} steps in "
                      f"{metrics['train_seconds']} s."),
            Image(plots.loss_curve_png(history, "weighted SFT"), alt="training loss and held-out perplexity"),
            Image(score_histogram_png(sentence_scores, cfg.threshold if cfg.mode == "mask" else None),
                  alt="sentence score histogram"),
            KeyValues({k.replace("_", " "): v for k, v in metrics["counts"].items()}, caption="tokens and examples"),
            KeyValues({k.replace("_", " "): v for k, v in metrics["data"].items() if k != "held_out_ids"},
                      caption="input data"),
        ]),
    ]
    evaluations = [row for row in history if "eval_held_out_perplexity" in row]
    if evaluations:
        sections.append(Section("Held-out perplexity", [
            Paragraph(f"{len(metrics['data']['held_out_ids'])} scored responses held out (eval_fraction "
                      f"{cfg.eval_fraction:g}); perplexity over their target tokens, each counted once."),
            Table(["step", "perplexity"], [[row["step"], row["eval_held_out_perplexity"]] for row in evaluations])]))
    sections.append(Section("Training examples", [
        Paragraph("Sentences coloured by the score that weights them (first training examples)."),
        RawHTML(scored_responses_html(shown, limit=10)),
    ]))
    return sections
