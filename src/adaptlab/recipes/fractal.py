"""FRACTAL recipes: ``fractal train``, ``fractal score`` and ``fractal evaluate``.

``evaluate`` compares, on the same grouped folds and seeds (bags of one question stay together):

* ``cosine``: the sentence–context cosine similarity as the score (no training);
* ``bagloss``: the MLP trained with the bag loss only (plus the preference term on pairs, when the
  data has pairs and ``pairs: true``: pairs are labels, not priors);
* ``fractal``: bag loss + cosine and correlation priors (the configured weights), the head mixed with
  the cosine by weights fitted on held-out training bags (``train.prior_mix``, on by default;
  :mod:`adaptlab.fractal.prior_mix`); the folds inside a training fold are grouped by question too;
* ``fractal_pseudo``: FRACTAL's head, then a fresh scorer trained on consistent pseudo-labels, mixed
  with the prior the same way;
* ``supervised``: the MLP trained on the true sentence labels (the upper bound).

Metrics per fold: sentence AUC-ROC and AUC-PR on the test bags' labelled sentences, and bag
accuracy of the aggregated scores; reported as mean ± std over folds × seeds. Pairs follow their
``group`` into the folds: a pair whose question is in the test fold is never trained on.

With ``train.encoder: finetune`` every trained method also fine-tunes the encoder
(:mod:`adaptlab.fractal.finetune`), restarting from ``feature_model``'s weights in every fold; the
features (and the priors' similarities) are cached from that initial encoder, at
``train.encoder_max_length`` when set. ``fractal train`` then saves the fine-tuned encoder inside the
scorer directory, and ``score`` / ``dpo-pairs`` use it (its own feature-cache key).

``train`` and ``evaluate`` leave run directories (:func:`adaptlab.runs.open_run`): ``train`` the scorer in
``model/``, ``metrics.json`` (loss history, prior mix) and ``report.html`` (loss curve, prior mix). ``score`` and
``dpo-pairs`` write only the JSONL file asked for: their ``--output`` is a file, not a run directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import AGGREGATORS
from adaptlab.fractal.bags import Bag, PairBag, read_bags, split_sentences
from adaptlab.fractal.constructions import CONSTRUCTIONS
from adaptlab.fractal.features import FeatureCache, bag_features
from adaptlab.fractal.finetune import EncoderScorer, save_finetuned_scorer
from adaptlab.fractal.folds import grouped_kfold
from adaptlab.fractal.model import load_scorer, save_scorer
from adaptlab.fractal.tensors import BagTensors, BagTexts, PairTensors, make_bag_tensors, make_pair_tensors
from adaptlab.fractal.train import FractalTrainConfig, fit, sentence_scores, train_bags, train_sentences
from adaptlab.fractal.view import scored_responses_html
from adaptlab.metrics.ranking import bag_accuracy, mean_std, sentence_auc
from adaptlab.report.html import Image, KeyValues, Paragraph, RawHTML, Section, Table
from adaptlab.runs import RunDir, atomic_write_text, get_logger, open_run, refuse_existing
from adaptlab.tuning.tracking import ReportTo, log_final_metrics, log_history, report_to_field, run_name_field

METHODS = ("cosine", "bagloss", "fractal", "fractal_pseudo", "supervised")
DATASETS = ("multispanqa", "qa_feedback")
DEFAULT_CACHE = ".adaptlab-cache/features"


class FractalDataConfig(StrictModel):
    data: str | None = Field(None, description="bags JSONL, or 'multispanqa' / 'qa_feedback' (with data_root)")
    data_root: str | None = Field(None, description="folder of the named dataset (e.g. ../shared/data/fractal/...)")
    limit: int | None = Field(None, ge=1, description="use only the first N source records")
    feature_model: str | None = Field(None, description="sentence-transformers model; default: packaged MiniLM")
    cache_dir: str = Field(DEFAULT_CACHE, description="where sentence embeddings are cached")
    pairs: bool = Field(True, description="also train on the data's preference pairs (Bradley–Terry)")
    construction: Literal[CONSTRUCTIONS] = Field(
        "paired", description="data: multispanqa only: how contexts become bags: paired, half_cropped, "
                              "positives_min, positives_avg (adaptlab.fractal.constructions)")
    data_seed: int = Field(0, description="data: multispanqa only: the construction's seed (which contexts get a "
                                          "cropped negative, or are cropped)")

    @model_validator(mode="after")
    def _construction_needs_multispanqa(self) -> FractalDataConfig:
        if self.data != "multispanqa" and (self.construction != "paired" or self.data_seed != 0):
            raise ConfigError("construction and data_seed build bags from MultiSpanQA's contexts; they need "
                              f"data: multispanqa (got data: {self.data}); remove them or write the bags yourself")
        return self


class FractalEvalConfig(FractalDataConfig):
    name: str = Field("fractal-eval", description="names the run directory runs/<time>-<name> when output is not given")
    folds: int = Field(5, ge=2, description="cross-validation folds; bags of one question (group) stay in one fold")
    seeds: list[int] = Field(
        [0, 1, 2], description="each seed repeats the whole cross-validation; results are mean ± std over folds x "
        "seeds")
    methods: list[Literal["cosine", "bagloss", "fractal", "fractal_pseudo", "supervised"]] = Field(
        list(METHODS), description="scorers compared: cosine prior, BagLoss, FRACTAL, FRACTAL + pseudo-labels, "
        "supervised (sentence labels)")
    train: FractalTrainConfig = Field(
        FractalTrainConfig(), description="the scorer's training settings, shared by every method")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")


class FractalTrainRunConfig(FractalDataConfig):
    name: str = Field("fractal", description="names the run directory runs/<time>-<name> when output is not given")
    train: FractalTrainConfig = Field(FractalTrainConfig(), description="the scorer's training settings")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    report_to: ReportTo = report_to_field()
    run_name: str | None = run_name_field()


def load_bags(cfg: FractalDataConfig) -> tuple[list[Bag], list[PairBag], dict]:
    """Bags and pairs from a JSONL file or a named loader, with the loader's counts.

    With ``pairs: false`` the pairs are dropped here (and counted as not used).
    """
    bags, pairs, stats = _read_source(cfg)
    if not cfg.pairs and pairs:
        stats["pairs_not_used"] = len(pairs)
        pairs = []
    if not bags and not pairs:
        raise ConfigError(f"{cfg.data}: no bags and no pairs to train on")
    return bags, pairs, stats


def _read_source(cfg: FractalDataConfig) -> tuple[list[Bag], list[PairBag], dict]:
    if not cfg.data:
        raise ConfigError("no data: pass --data BAGS.jsonl (or data: multispanqa with data_root)")
    if cfg.data in DATASETS:
        from adaptlab.fractal import datasets

        if not cfg.data_root:
            raise ConfigError(f"data: {cfg.data} needs data_root, the folder holding it")
        if cfg.data == "multispanqa":
            loaded = datasets.load_multispanqa(cfg.data_root, limit=cfg.limit, seed=cfg.data_seed,
                                               construction=cfg.construction)
        else:
            loaded = datasets.load_qa_feedback(cfg.data_root, limit=cfg.limit)
        return loaded.bags, loaded.pairs, loaded.stats.as_dict()
    bags, pairs = read_bags(cfg.data)
    bags = bags[: cfg.limit] if cfg.limit else bags
    pairs = pairs[: cfg.limit] if cfg.limit else pairs
    return bags, pairs, {"bags": len(bags), "pairs": len(pairs)}


def _bag_tensors(cache: FeatureCache, bags: list[Bag]) -> BagTensors:
    feats = bag_features(cache, bags)
    labels = [label for bag in bags for label in (bag.sentence_labels or [None] * len(bag.sentences))]
    texts = BagTexts([s for bag in bags for s in bag.sentences], [bag.context for bag in bags])
    return make_bag_tensors(feats.features, [len(b.sentences) for b in bags], [b.label for b in bags],
                            feats.context_sim, feats.sentence_embeddings, labels, texts)


def featurize(cfg: FractalDataConfig, bags: list[Bag], pairs: list[PairBag] = (),
              max_seq_length: int | None = None) -> tuple[BagTensors, PairTensors | None]:
    """Features (and texts) of the bags and of both sides of every pair (side a of pair p is side bag 2p).

    ``max_seq_length`` overrides the encoder window (``train.encoder_max_length`` when fine-tuning).
    """
    sides = [Bag(id=f"{pair.id}:{name}", context=pair.context, sentences=side.sentences, offsets=None, label=0.0)
             for pair in pairs for name, side in (("a", pair.a), ("b", pair.b))]
    with FeatureCache(cfg.cache_dir, cfg.feature_model, max_seq_length=max_seq_length) as cache:
        data = _bag_tensors(cache, bags) if bags else None
        pair_data = make_pair_tensors(_bag_tensors(cache, sides), [p.preference for p in pairs]) if pairs else None
    if data is None:  # pairs only: an empty bag set with the pairs' feature width
        data = pair_data.sides.subset([])
    return data, pair_data


def pairs_outside(pairs: list[PairBag], pair_data: PairTensors | None,
                  test_groups: set) -> tuple[PairTensors | None, list[str | None]]:
    """The pairs whose question (group) is not among ``test_groups``, those a fold may train on, and their groups."""
    if pair_data is None:
        return None, []
    keep = [i for i, pair in enumerate(pairs) if pair.group is None or pair.group not in test_groups]
    return (pair_data.subset(keep) if keep else None), [pairs[i].group for i in keep]


def method_scores(method: str, train: BagTensors, test: BagTensors, cfg: FractalTrainConfig,
                  pairs: PairTensors | None = None, encoder_model: str | None = None,
                  groups: list[str | None] | None = None, pair_groups: list[str | None] | None = None
                  ) -> torch.Tensor:
    """Sentence scores of the test bags after training ``method`` on the train bags (and pairs).

    ``encoder_model``: the feature model, where ``cfg.encoder`` is finetune. ``groups`` / ``pair_groups``: the
    question of each training bag / pair, which the prior mix of ``fractal`` keeps together when it holds
    training bags out. ``bagloss`` is the head with neither priors nor prior mix.
    """
    if method == "cosine":
        return torch.nan_to_num(test.similarities, nan=0.0)
    if method == "supervised":
        return sentence_scores(train_sentences(train, train.sentence_labels, cfg, encoder_model=encoder_model), test)
    if method == "bagloss":
        cfg = cfg.model_copy(update={"weights": {"cosine": 0.0, "correlation": 0.0, "hybrid": 0.0},
                                     "prior_mix": False})
        return sentence_scores(train_bags(train, cfg, pairs, encoder_model)[0], test)
    cfg = cfg.model_copy(update={"pseudo_label": method == "fractal_pseudo"})
    return sentence_scores(fit(train, cfg, pairs, encoder_model, groups, pair_groups)[0], test)


def fold_metrics(scores: torch.Tensor, test: BagTensors, aggregation: str, temperature: float) -> dict:
    bag_scores = AGGREGATORS[aggregation](scores.clamp(1e-6, 1 - 1e-6), test.bag_index, test.n_bags, temperature)
    auc = sentence_auc(test.sentence_labels.numpy(), scores.numpy())
    bags = bag_accuracy(test.bag_labels.numpy(), bag_scores.numpy())
    return {"auc_roc": auc["auc_roc"], "auc_pr": auc["auc_pr"], "bag_accuracy": bags["accuracy"],
            "bag_mae": bags["mae"]}


def evaluate(cfg: FractalEvalConfig) -> tuple[RunDir, dict]:
    bags, pairs, load_stats = load_bags(cfg)
    if not any(b.sentence_labels for b in bags):
        raise ConfigError("no bag has sentence_labels, so sentence AUC cannot be computed")
    with open_run(cfg.output, cfg.name, cfg) as run:
        metrics, shown_method, held_out = cross_validate(cfg, bags, pairs, load_stats)
        sections = report_sections(cfg, bags, metrics, shown_method, held_out)
        run.finish(metrics, f"FRACTAL evaluation: {cfg.data}", sections)
    return run, metrics


def cross_validate(cfg: FractalEvalConfig, bags: list[Bag], pairs: list[PairBag],
                   load_stats: dict) -> tuple[dict, str, dict[int, list[float]]]:
    """Every method on every grouped fold and seed: the metrics, the method shown in the report and its held-out
    scores per bag (first seed)."""
    log = get_logger()
    started = time.perf_counter()
    data, pair_data = featurize(cfg, bags, pairs, cfg.train.encoder_max_length)
    log.info("features for %d bags / %d sentences and %d pairs in %.1f s", data.n_bags, len(data.features),
             len(pairs), time.perf_counter() - started)
    per_method: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    train_seconds: list[float] = []
    shown_method = "fractal" if "fractal" in cfg.methods else cfg.methods[-1]
    held_out: dict[int, list[float]] = {}  # bag -> its scores when it was a test bag (first seed), for the report
    for seed in cfg.seeds:
        train_cfg = cfg.train.model_copy(update={"seed": seed})
        for fold, (train_idx, test_idx) in enumerate(grouped_kfold([b.group for b in bags], cfg.folds, seed)):
            train, test = data.subset(list(train_idx)), data.subset(list(test_idx))
            train_pairs, pair_groups = pairs_outside(pairs, pair_data, {bags[b].group for b in test_idx})
            groups = [bags[b].group for b in train_idx]
            for method in cfg.methods:
                tic = time.perf_counter()
                scores = method_scores(method, train, test, train_cfg, train_pairs, cfg.feature_model, groups,
                                       pair_groups)
                row = {"seed": seed, "fold": fold, "seconds": time.perf_counter() - tic,
                       **fold_metrics(scores, test, cfg.train.aggregation, cfg.train.temperature)}
                per_method[method].append(row)
                if method == shown_method and seed == cfg.seeds[0]:
                    lengths = [len(bags[b].sentences) for b in test_idx]
                    held_out.update(zip(test_idx, split_by_bag(scores.tolist(), lengths)))
                if method == "fractal":
                    train_seconds.append(row["seconds"])
            log.info("seed %d fold %d: %s", seed, fold, {m: round(per_method[m][-1]["auc_roc"], 4)
                                                          for m in cfg.methods})
    keys = ("auc_roc", "auc_pr", "bag_accuracy", "bag_mae", "seconds")
    summary = {m: {k: mean_std([r[k] for r in rows]) for k in keys} for m, rows in per_method.items()}
    metrics = {"data": load_stats, "bags": data.n_bags, "sentences": len(data.features), "pairs": len(pairs),
               "encoder": cfg.train.encoder, "folds": cfg.folds,
               "seeds": cfg.seeds, "summary": summary, "per_fold": per_method,
               "fractal_train_seconds_per_fold": mean_std(train_seconds) if train_seconds else None}
    return metrics, shown_method, held_out


def split_by_bag(scores: list[float], lengths: list[int]) -> list[list[float]]:
    """Flat sentence scores (bags one after another) -> one list per bag."""
    ends = np.cumsum(lengths).tolist()
    return [scores[end - n:end] for n, end in zip(lengths, ends)]


def report_sections(cfg: FractalEvalConfig, bags: list[Bag], metrics: dict, shown_method: str,
                    held_out: dict[int, list[float]]) -> list[Section]:
    rows = [[method] + [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in ("auc_roc", "auc_pr", "bag_accuracy")]
            for method, row in metrics["summary"].items()]
    items = [{"id": bags[b].id, "context": bags[b].context, "sentences": bags[b].sentences,
              "scores": held_out[b], "labels": bags[b].sentence_labels} for b in sorted(held_out)[:10]]
    return [
        Section("Methods", [
            Paragraph(f"{cfg.folds}-fold cross-validation grouped by question, seeds {cfg.seeds}; mean ± std."),
            Table(["method", "sentence AUC-ROC", "sentence AUC-PR", "bag accuracy"], rows),
            KeyValues({"bags": metrics["bags"], "sentences": metrics["sentences"], "encoder": metrics["encoder"],
                       **metrics["data"]}),
        ]),
        Section(f"Scored responses ({shown_method}, held-out scores)", [
            Paragraph("Each bag scored by the model of the fold that held it out. Green: high score; red: low."),
            RawHTML(scored_responses_html(items, limit=10)),
        ]),
    ]


def train(cfg: FractalTrainRunConfig) -> tuple[RunDir, dict]:
    bags, pairs, load_stats = load_bags(cfg)
    with open_run(cfg.output, cfg.name, cfg) as run:
        data, pair_data = featurize(cfg, bags, pairs, cfg.train.encoder_max_length)
        model, history = fit(data, cfg.train, pair_data, cfg.feature_model, [b.group for b in bags],
                             [p.group for p in pairs])
        info = {"feature_model": cfg.feature_model, "aggregation": cfg.train.aggregation,
                "temperature": cfg.train.temperature, "cache_dir": cfg.cache_dir}
        if isinstance(model, EncoderScorer):
            save_finetuned_scorer(model, run.model, {**info, "finetuned_from": cfg.feature_model})
        else:
            save_scorer(model, run.model, info)
        mix = getattr(model, "prior_mix", None)
        metrics = {"data": load_stats, "bags": data.n_bags, "sentences": len(data.features), "pairs": len(pairs),
                   "history": history, "prior_mix": None if mix is None else asdict(mix)}
        log_history(cfg, run.path, history, "epoch")  # the scorer's own loop: one row of loss terms per epoch
        log_final_metrics(cfg, run.path, {"prior_mix": metrics["prior_mix"] or {}}, len(history))
        run.finish(metrics, f"FRACTAL scorer: {cfg.data}", train_report_sections(cfg, metrics))
    return run, metrics


def train_report_sections(cfg: FractalTrainRunConfig, metrics: dict) -> list[Section]:
    """The data, the training loss by epoch (every loss term in the last row) and the prior mix."""
    from adaptlab.report.plots import learning_curve

    last = metrics["history"][-1] if metrics["history"] else {}
    sections = [Section("Training", [
        KeyValues({"bags": metrics["bags"], "sentences": metrics["sentences"], "pairs": metrics["pairs"],
                   "aggregation": cfg.train.aggregation, "encoder": cfg.train.encoder, **metrics["data"]}),
        Image(learning_curve(metrics["history"], "training loss by epoch"), alt="training loss by epoch"),
        KeyValues(last, caption="last epoch (every loss term)"),
    ])]
    if metrics["prior_mix"] is not None:
        sections.append(Section("Prior mix", [
            Paragraph("The head's scores are mixed with the cosine prior by a weight chosen on held-out training "
                      "bags (train.prior_mix); model/scorer.json holds the same numbers."),
            KeyValues(metrics["prior_mix"])]))
    return sections


def dpo_pairs(model_dir: str, input_path: str, output: str, reduce: str = "min", min_margin: float = 0.0) -> dict:
    """Rank each prompt's responses by the scorer (min or mean sentence score) into DPO pairs.

    Input: one JSON object per line, ``{"prompt": str, "responses": [str, ...]}``; output: TRL's
    ``{"prompt", "chosen", "rejected"}`` lines plus both rewards. Returns the counts.
    """
    from adaptlab.data.records import iter_json_lines
    from adaptlab.fractal.use import preference_pairs, write_dpo_jsonl

    refuse_existing(output, "output file")
    model, info = load_scorer(model_dir)
    items = [obj for _, obj in iter_json_lines(input_path)]
    # every (prompt, response sentences) is featurized and scored in one pass; the ranking then looks them up
    candidates = list(dict.fromkeys(
        (item["prompt"], tuple(s for s, _, _ in split_sentences(response)))
        for item in items if isinstance(item.get("prompt"), str) and isinstance(item.get("responses"), list)
        for response in item["responses"] if isinstance(response, str)))
    candidates = [(prompt, sentences) for prompt, sentences in candidates if sentences]
    table: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    if candidates:
        bags = [Bag(id=f"candidate-{i}", context=prompt, sentences=list(sentences), offsets=None, label=0.0)
                for i, (prompt, sentences) in enumerate(candidates)]
        with FeatureCache(info.get("cache_dir") or DEFAULT_CACHE, info.get("feature_model")) as cache:
            features = bag_features(cache, bags).features
        flat = model.score(torch.as_tensor(np.asarray(features), dtype=torch.float32)).tolist()
        table = dict(zip(candidates, split_by_bag(flat, [len(sentences) for _, sentences in candidates])))
    pairs, counts = preference_pairs(items, lambda context, sentences: table[(context, tuple(sentences))],
                                     reduce, min_margin)
    write_dpo_jsonl(pairs, output)
    return counts


def score(model_dir: str, input_path: str, output: str) -> int:
    """Write one JSON line per bag: ``{"id", "sentences", "scores"}`` (scores in [0, 1], in order)."""
    refuse_existing(output, "output file")
    model, info = load_scorer(model_dir)
    bags, _ = read_bags(input_path)
    with FeatureCache(info.get("cache_dir") or DEFAULT_CACHE, info.get("feature_model")) as c:
        feats = bag_features(c, bags)
    scores = model.score(torch.as_tensor(np.asarray(feats.features), dtype=torch.float32)).tolist()
    per_bag = split_by_bag(scores, [len(bag.sentences) for bag in bags])
    lines = [json.dumps({"id": bag.id, "sentences": bag.sentences, "scores": bag_scores}, ensure_ascii=False)
             for bag, bag_scores in zip(bags, per_bag)]
    atomic_write_text(Path(output), "\n".join(lines) + "\n")
    return len(bags)

