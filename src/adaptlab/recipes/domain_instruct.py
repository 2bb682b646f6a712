"""``adaptlab domain-instruct CONFIG``: a domain instruction model without instruction data.

The recipe of Hirano & Imajo (2024), read top to bottom:

1. **Continual pretraining** of the base model on a prepared domain corpus (``adaptlab lm prepare``;
   replay of general text is the corpus' ``replay_ratio``), with a re-warmed, re-decayed learning
   rate: ``base -> domain`` (:func:`adaptlab.recipes.lm_train.train`, mode ``cpt``).
2. **The chat vector**: ``merged = domain + λ·(instruct − base)`` with the merging engine
   (:func:`adaptlab.merge.chat_vector.chat_vector_config`); the domain model's tokenizer, the instruct
   model's chat template. With ``merge.search`` the λ's are tried in turn and the one with the lowest
   ``log(ppl_domain) + general_weight·log(ppl_general)`` on the corpus' held-out text is kept
   (:func:`adaptlab.merge.search.run_search`).
3. **Evaluation** of base, instruct, domain and merged on held-out domain and general perplexity,
   the configured multiple-choice tasks and the instruction-following probe
   (:func:`adaptlab.recipes.lm_evaluate.evaluate`).
4. **One report**: the comparison table and the continual-pretraining loss curves in ``report.html``.

Stages leave their results in sub-directories of the run (``cpt/``, ``merge/`` or ``merged/``,
``evaluate/``). Running again with the same ``--output`` continues an interrupted run: a finished
stage is kept while the config keys it reads are unchanged (so a changed evaluation or merge setting
reuses the continual pretraining), continual pretraining resumes from its newest valid checkpoint,
and the evaluation is redone. Every stage's inputs are checked before the first starts: base and
instruct must be mergeable causal LMs, and the evaluation's tasks must load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from adaptlab.config import StrictModel, save_config
from adaptlab.errors import AdaptlabError, ConfigError, RunDirError
from adaptlab.recipes.lm_evaluate import LMEvalConfig
from adaptlab.recipes.lm_train import LMTrainConfig
from adaptlab.report.html import Image, KeyValues, Paragraph, Section, Table
from adaptlab.report.plots import loss_curve_png
from adaptlab.runs import RunDir, atomic_write_json, get_logger, keep_on_failure, open_run

RECIPE_SETS = {"train": ("mode", "model", "data", "output", "resume"), "evaluate": ("models", "output")}
MODEL_ROLES = ("base", "instruct", "domain", "merged")
STAGE_KEYS = {"cpt": {"base", "corpus", "train"}, "merge": {"instruct", "merge"}}  # config keys each stage reads


class ChatVectorStep(StrictModel):
    scale: float = Field(1.0, description="λ in domain + λ·(instruct − base) when there is no search")
    search: list[float] | None = Field(None, description="λ values to try; the best on held-out perplexity is kept")
    general_weight: float = Field(1.0, ge=0, description="weight of log(ppl_general) in the search score")
    max_length: int = Field(512, ge=2, description="tokens per perplexity window in the search")
    dtype: str | None = Field(None, description="merged weights' dtype; default: the base model's")


class DomainInstructConfig(StrictModel):
    name: str = Field(
        "domain-instruct", description="names the run directory runs/<time>-<name> when output is not given")
    base: str = Field(description="the base model (HF directory or hub name)")
    instruct: str = Field(description="the base model's instruction-tuned version")
    corpus: str = Field(description="a prepared corpus directory (adaptlab lm prepare)")
    train: LMTrainConfig = Field(LMTrainConfig(), description="continual-pretraining settings (adaptlab lm train)")
    merge: ChatVectorStep = Field(
        ChatVectorStep(), description="the chat-vector step: domain + λ·(instruct − base), λ fixed or searched")
    evaluate: LMEvalConfig = Field(LMEvalConfig(), description="evaluation settings; models are set by the recipe")
    output: str | None = Field(
        None, description="run directory; an existing one from the same config continues where it stopped")


def check_config(cfg: DomainInstructConfig) -> None:
    """Keys the recipe sets itself must not be set by the user (they would be silently replaced)."""
    for section, keys in RECIPE_SETS.items():
        given = sorted(set(keys) & getattr(cfg, section).model_fields_set)
        if given:
            raise ConfigError(f"{section}.{given[0]} is set by the domain-instruct recipe; remove it from the config "
                              f"(the recipe sets {', '.join(f'{section}.{k}' for k in keys)})")
    if cfg.merge.search is not None and not cfg.merge.search:
        raise ConfigError("merge.search is an empty list; give λ values to try, or remove it")


def earlier_run(cfg: DomainInstructConfig) -> tuple[RunDir | None, list[str]]:
    """An earlier run of this recipe in ``output`` to continue (None for a new run), and its changed config keys.

    The earlier run's finished stages are kept as long as what they were made from is unchanged: continual
    pretraining while ``base``, ``corpus`` and ``train`` are the same, the merge while ``instruct`` and
    ``merge`` are the same too (:data:`STAGE_KEYS`); the evaluation is always redone.
    """
    output = Path(cfg.output) if cfg.output else None
    if output is None or not output.is_dir() or not any(output.iterdir()):
        return None, []
    run = RunDir(output)
    previous = yaml.safe_load(run.config.read_text(encoding="utf-8")) if run.config.is_file() else None
    if not isinstance(previous, dict):
        raise RunDirError(f"{output} is not empty and holds no domain-instruct run; choose another output "
                          "(adaptlab never overwrites a directory)")
    current = cfg.model_dump(mode="json", by_alias=True)
    changed = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
    if set(changed) & STAGE_KEYS["cpt"]:
        raise RunDirError(f"{output} holds a run whose continual pretraining was made with other "
                          f"{', '.join(sorted(set(changed) & STAGE_KEYS['cpt']))}; choose another output (adaptlab "
                          "never overwrites a directory)")
    return run, changed


def continue_run(cfg: DomainInstructConfig, run: RunDir, changed: list[str]) -> None:
    """Record the current config in the continued run, and drop the merge when its inputs changed."""
    save_config(cfg, run.config)
    log = get_logger()
    if set(changed) & STAGE_KEYS["merge"]:
        for stale in ("merged", "merge-search", "merge.json"):
            target = run.path / stale
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        log.info("%s changed: the merge is done again", ", ".join(sorted(set(changed) & STAGE_KEYS["merge"])))
    log.info("continuing the run in %s (finished stages are kept)", run.path)


def continual_pretraining(cfg: DomainInstructConfig, run: RunDir) -> dict[str, Any]:
    from adaptlab.recipes import lm_train

    stage = run.path / "cpt"
    if (stage / "model").is_dir() and (stage / "metrics.json").is_file():
        get_logger().info("continual pretraining already done: %s", stage / "model")
        return json.loads((stage / "metrics.json").read_text(encoding="utf-8"))
    train_cfg = cfg.train.model_copy(update={"mode": "cpt", "model": cfg.base, "data": cfg.corpus,
                                             "output": str(stage), "resume": "auto"})
    _, metrics = lm_train.train(train_cfg)
    return metrics


def chat_vector_merge(cfg: DomainInstructConfig, run: RunDir, domain: Path,
                      texts: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """The merged model's directory and what was chosen (λ, and the search rows when searching)."""
    from adaptlab.merge.chat_vector import chat_vector_config
    from adaptlab.merge.engine import merge_models
    from adaptlab.merge.search import SearchConfig, run_search

    merged, record = run.path / "merged", run.path / "merge.json"
    step = cfg.merge
    if merged.is_dir() and record.is_file():
        get_logger().info("chat-vector merge already done: %s", merged)
        return merged, json.loads(record.read_text(encoding="utf-8"))
    shutil.rmtree(merged, ignore_errors=True)  # a merge interrupted before its record was written
    merge_config = chat_vector_config(cfg.base, cfg.instruct, str(domain), str(merged), step.scale, step.dtype)
    if step.search is None:
        merge_models(merge_config)
        info: dict[str, Any] = {"scale": step.scale, "search": None}
    else:
        search_dir = run.path / "merge-search"
        shutil.rmtree(search_dir, ignore_errors=True)  # an interrupted search starts over
        search = SearchConfig(merge=merge_config, grid=step.search, target="weight", vary=cfg.instruct,
                              domain_text=texts["domain"], general_text=texts.get("general"),
                              general_weight=step.general_weight, max_length=step.max_length,
                              output=str(search_dir), progress=cfg.train.training.progress)
        _, result = run_search(search)
        if result["best_model"] is None:
            raise ConfigError("no λ of merge.search gave a finite held-out perplexity; see "
                              f"{search_dir / 'report.html'}")
        Path(result["best_model"]).rename(merged)
        info = {"scale": result["best"]["value"], "search": result["rows"]}
    atomic_write_json(record, info)
    return merged, info


def prepared_texts(corpus: str) -> dict[str, str]:
    """The corpus' held-out raw text files: ``{"domain": path, "general": path}`` (general when present).

    ``corpus`` is the run directory of ``adaptlab lm prepare`` or its ``data/`` folder, as for ``lm train``.
    """
    from adaptlab.lm.prepared import corpus_root

    folder = corpus_root(corpus) / "text"
    texts = {role: str(folder / f"eval_{role}.txt") for role in ("domain", "general")
             if (folder / f"eval_{role}.txt").is_file()}
    if "domain" not in texts:
        raise ConfigError(f"corpus {corpus} has no held-out domain text ({folder / 'eval_domain.txt'}); "
                          "give a directory written by `adaptlab lm prepare`")
    return texts


def evaluate_models(cfg: DomainInstructConfig, run: RunDir, models: dict[str, str],
                    texts: dict[str, str]) -> dict[str, Any]:
    from adaptlab.recipes import lm_evaluate

    stage = run.path / "evaluate"
    shutil.rmtree(stage, ignore_errors=True)  # cheap next to training: always redone
    settings = cfg.evaluate.model_dump()
    if not settings["perplexity"]["texts"]:
        settings["perplexity"]["texts"] = texts
    settings.update(models=[{"name": name, "path": path} for name, path in models.items()], output=str(stage))
    _, metrics = lm_evaluate.evaluate(lm_evaluate.LMEvalConfig.model_validate(settings))
    return metrics


def check_stage_inputs(cfg: DomainInstructConfig) -> None:
    """What the later stages read, checked before continual pretraining starts (it can take hours): base and
    instruct are causal LMs that can be merged (the domain model has the base's shapes), and the evaluation's
    tasks and probe prompts load."""
    from adaptlab.merge.chat_vector import chat_vector_config
    from adaptlab.merge.engine import check_mergeable
    from adaptlab.models.checks import check_local_model
    from adaptlab.models.gguf import resolve_model
    from adaptlab.recipes.lm_evaluate import load_inputs

    models = {key: resolve_model(getattr(cfg, key), key) for key in ("base", "instruct")}
    for key, path in models.items():
        check_local_model(path, "causal_lm", key)
    try:
        check_mergeable(chat_vector_config(models["base"], models["instruct"], models["base"], "unused",
                                           cfg.merge.scale, cfg.merge.dtype))
    except AdaptlabError as exc:
        raise type(exc)(f"base and instruct cannot be merged by the chat vector (stage 2): {exc}") from None
    load_inputs(cfg.evaluate)


def run(cfg: DomainInstructConfig) -> tuple[RunDir, dict[str, Any]]:
    check_config(cfg)
    texts = prepared_texts(cfg.corpus)
    check_stage_inputs(cfg)
    existing, changed = earlier_run(cfg)
    with open_run(cfg.output, cfg.name, cfg, existing=existing) as run_dir:
        if existing is not None:
            continue_run(cfg, run_dir, changed)
        log = get_logger()
        log.info("1/3 continual pretraining of %s on %s", cfg.base, cfg.corpus)
        cpt = continual_pretraining(cfg, run_dir)
        keep_on_failure(run_dir, f"run the same command again with --output {run_dir.path}: the finished "
                                 "continual pretraining is reused")
        domain = run_dir.path / "cpt" / "model"
        log.info("2/3 chat-vector merge: domain + λ·(instruct − base)")
        merged, merge_info = chat_vector_merge(cfg, run_dir, domain, texts)
        log.info("3/3 evaluating base, instruct, domain and merged")
        models = dict(zip(MODEL_ROLES, (cfg.base, cfg.instruct, str(domain), str(merged))))
        evaluation = evaluate_models(cfg, run_dir, models, texts)
        metrics = {"models": models, "merge": merge_info, "table": evaluation["table"],
                   "probe_examples": {name: m.get("probe", {}).get("examples", [])
                                      for name, m in evaluation["models"].items()},
                   "cpt": {k: v for k, v in cpt.items() if k != "history"}, "cpt_history": cpt["history"]}
        run_dir.finish(metrics, f"Domain instruct: {cfg.name}", report_sections(metrics))
    return run_dir, metrics


def report_sections(metrics: dict[str, Any]) -> list[Section]:
    table = metrics["table"]
    columns = list(table[0]) if table else []
    merge = metrics["merge"]
    sections = [
        Section("Base, instruct, domain and merged", [
            Paragraph("ppl_*: held-out perplexity (lower is better); *_acc: multiple-choice accuracy by "
                      "log-likelihood; probe_both: share of probe prompts answered in the chat format and "
                      "stopped at EOS. The recipe's aim: the merged model near the domain model on domain "
                      "perplexity and near the instruct model on the probe."),
            Table(columns, [[row[c] for c in columns] for row in table]),
            KeyValues({"models": ", ".join(f"{k}: {v}" for k, v in metrics["models"].items()),
                       "chat-vector λ": merge["scale"]}),
        ]),
        Section("Continual pretraining", [
            Image(loss_curve_png(metrics["cpt_history"], "continual pretraining"), alt="CPT loss curves"),
            KeyValues({k: v for k, v in metrics["cpt"].items() if not isinstance(v, (dict, list))}),
        ]),
    ]
    if merge["search"]:
        rows = [[row["value"], row["ppl_domain"], row["ppl_general"], row["score"]]
                for row in merge["search"]]
        sections.append(Section("λ search", [Table(["λ", "ppl_domain", "ppl_general", "score"], rows)]))
    examples = metrics["probe_examples"]
    if any(examples.values()):
        rows = [[name, ex.get("prompt"), ex.get("response"), ex.get("stopped")]
                for name, items in examples.items() for ex in items]
        sections.append(Section("Probe examples", [Table(["model", "prompt", "response", "stopped"], rows)]))
    return sections
