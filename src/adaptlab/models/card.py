"""Model cards: a Hugging Face ``README.md`` in every model directory a run writes.

A model directory leaves adaptlab to be shared (``huggingface-cli upload``), served or merged, and its README is
what people and the Hub read first. The card is written by :meth:`adaptlab.runs.RunDir.finish`, the one place
every run's results are completed, for each model directory inside the run (:func:`model_directories`): the run
directory itself for a merge, ``model/``, ``tasks/<name>/`` of a multi-task run, a stage's ``<stage>/model/``.
Each card holds:

* YAML front matter in the Hub's names (``huggingface_hub.ModelCardData``): ``library_name`` (transformers, peft,
  sentence-transformers), ``base_model`` where the Hub can resolve it (:func:`~adaptlab.models.card_facts.hub_name`),
  ``pipeline_tag`` and ``tags`` (``adaptlab`` and what the model is: ``ner``, ``merge``, ``peft``, ...);
* what it is (one sentence: the task and the kind of model), the base model, the method and strategies, the data
  (files and counts) and the headline metrics (:mod:`adaptlab.models.card_results`), the resolved ``config.yaml``
  and a snippet that loads it (:mod:`adaptlab.models.card_usage`);
* for a merge, the merge in mergekit's dialect (the ``mergekit_config.yml`` the engine wrote), or why it has none.

Everything comes from the model's files, the run's ``config.yaml`` and the metrics given to ``finish``, so no recipe
calls anything. A nested run (a stage with its own ``config.yaml`` and ``metrics.json``) writes its own cards. A
card that cannot be written is a warning in the log, never a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adaptlab import __version__
from adaptlab.models.card_facts import ModelFacts, base_models, describe_model, hub_name, is_model_directory
from adaptlab.models.card_results import compact, data_text, fenced, listed, metrics_text
from adaptlab.models.card_usage import load_snippet
from adaptlab.runs import atomic_write_text, completed_path, get_logger

CARD_FILE = "README.md"
SEARCH_DEPTH = 3  # run/model, run/tasks/NAME, run/STAGE/model
SKIPPED_FOLDERS = ("checkpoints",)
TRAINING_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "seed")
QUIET_SETTINGS = ("progress",)  # settings that change how a run looks, not the model
STRATEGY_TAGS = {"peft": "peft", "distill": "distillation", "domain": "domain-adaptation", "fewshot": "few-shot"}
KIND_TITLES = {"token-classification": "NER student (token classification)", "text-classification": "text classifier",
               "text-generation": "causal language model", "fill-mask": "masked language model",
               "feature-extraction": "encoder", "fractal-scorer": "FRACTAL sentence scorer"}


@dataclass
class RunRecord:
    """What the run knows about its models: its config (as parsed and as written), metrics and title."""

    config: dict[str, Any]
    config_text: str | None
    metrics: dict[str, Any]
    title: str
    has_results: bool = True  # the run directory holds metrics.json and report.html


@dataclass
class Scope:
    """The part of the run a model directory belongs to: one task of a multi-task run, or the whole run."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    task: str | None = None


def write_model_cards(run_path: Path, metrics: dict[str, Any], title: str) -> list[Path]:
    """Write ``README.md`` into every model directory of the run in ``run_path``; returns the cards written."""
    directories = model_directories(run_path)
    if not directories:
        return []
    config_file = run_path / "config.yaml"
    config_text = config_file.read_text(encoding="utf-8") if config_file.is_file() else None
    config = yaml.safe_load(config_text) if config_text else {}
    record = RunRecord(config if isinstance(config, dict) else {}, config_text, metrics, title,
                       (run_path / "metrics.json").is_file())
    final = completed_path(run_path)  # where an atomic run (a merge) will be once renamed into place
    written = []
    for directory in directories:
        try:
            text = model_card(directory, record, final / directory.relative_to(run_path), final)
            written.append(atomic_write_text(directory / CARD_FILE, text))
        except Exception as exc:  # a card is a courtesy of a finished run: it never fails the run
            get_logger().warning("no model card in %s (%s: %s)", directory, type(exc).__name__, exc)
    if written:
        get_logger().info("model cards written: %s", ", ".join(str(p.relative_to(run_path)) for p in written))
    return written


def model_directories(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """``root`` when it is a model directory, else the model directories below it (``depth`` levels at most),
    never inside a model directory, a checkpoint folder, a hidden folder or a nested run's directory."""
    if is_model_directory(root):
        return [root]
    if depth == 0:
        return []
    found = []
    for child in sorted(path for path in root.iterdir() if path.is_dir()):
        nested_run = (child / "config.yaml").is_file() and (child / "metrics.json").is_file()
        if not (child.name.startswith(".") or child.name in SKIPPED_FOLDERS or nested_run):
            found += model_directories(child, depth - 1)
    return found


def model_card(directory: Path, record: RunRecord, location: Path, run_location: Path) -> str:
    """The card of the model in ``directory`` (which users find at ``location``) made by the run ``record`` (whose
    directory users find at ``run_location``)."""
    facts = describe_model(directory)
    scope = scope_of(directory, record)
    bases = base_models(facts, scope.config if facts.adapter is None and facts.merge is None else record.config)
    name = record.config.get("name") or directory.name
    kind = kind_title(facts)
    sections = [
        front_matter(facts, record, scope, bases),
        f"# {name}{f' / {scope.task}' if scope.task else ''}: {kind}",
        what_it_is(facts, record, scope),
        "## Base model\n\n" + base_model_text(facts, bases),
        "## Method and strategy\n\n" + method_text(facts, record, scope),
        "## Data\n\n" + data_text(scope.config, scope.metrics, facts.merge is not None),
        "## Metrics\n\n" + metrics_text(scope.metrics, run_location if record.has_results else None),
    ]
    if facts.merge is not None:
        sections.append("## The merge in mergekit's dialect\n\n" + mergekit_text(facts))
    if record.config_text:
        sections.append("## Resolved config\n\nThe run's `config.yaml`, with every default filled in:\n\n"
                        + fenced("yaml", record.config_text))
    base = bases[0] if bases else None
    prose, language, code = load_snippet(facts, str(location), base)
    sections.append(f"## How to load it\n\n{prose}\n\n{fenced(language, code)}")
    return "\n\n".join(sections) + "\n"


def scope_of(directory: Path, record: RunRecord) -> Scope:
    """A multi-task run's ``tasks/<name>/`` export sees its task's config and metrics; anything else the run's."""
    tasks = record.config.get("tasks")
    if directory.parent.name == "tasks" and isinstance(tasks, dict) and directory.name in tasks:
        task = directory.name
        shared = {key: record.metrics[key] for key in ("best_mean_dev_f1", "train_seconds") if key in record.metrics}
        config = {**record.config, **tasks[task]}
        return Scope(config, {**record.metrics.get("tasks", {}).get(task, {}), **shared}, task)
    return Scope(record.config, record.metrics)


def front_matter(facts: ModelFacts, record: RunRecord, scope: Scope, bases: list[str]) -> str:
    from huggingface_hub import ModelCardData

    hub = [name for name in (hub_name(base) for base in bases) if name]
    data = ModelCardData(library_name=facts.library, base_model=(hub[0] if len(hub) == 1 else hub) or None,
                         pipeline_tag=facts.pipeline_tag, tags=card_tags(facts, record, scope))
    if hub and (facts.merge is not None or facts.adapter is not None):
        data.base_model_relation = "merge" if facts.merge is not None else "adapter"
    return f"---\n{data.to_yaml()}\n---"


def card_tags(facts: ModelFacts, record: RunRecord, scope: Scope) -> list[str]:
    tags = ["adaptlab"]
    if facts.task == "token-classification":
        tags.append("ner")
    tags += ["relation-extraction"] if facts.relation_markers else []
    tags += ["few-shot"] if facts.fewshot_head else []
    tags += ["fractal"] if facts.task == "fractal-scorer" or "scores" in record.config else []
    tags += ["multi-task"] if scope.task else []
    mode = record.config.get("mode")
    tags += {"cpt": ["continued-pretraining"], "sft": ["sft"]}.get(mode, []) if isinstance(mode, str) else []
    tags += ["sft"] if "scores" in record.config and "bags" in record.config else []
    for name, settings in (scope.config.get("strategy") or {}).items():
        tags += [STRATEGY_TAGS[name]] if name in STRATEGY_TAGS else []
        tags += [settings["method"]] if name == "peft" and isinstance(settings, dict) and "method" in settings else []
    if facts.merge is not None:
        method = (facts.merge.get("config") or {}).get("method")
        tags += ["merge", *([method] if method else []), *(["mergekit"] if mergekit_yaml(facts) else [])]
    if "instruct" in record.config and "corpus" in record.config:
        tags += ["chat-vector", "domain-adaptation"]
    return list(dict.fromkeys(tags))


def kind_title(facts: ModelFacts) -> str:
    kind = ("relation classifier" if facts.relation_markers else "few-shot text classifier" if facts.fewshot_head
            else KIND_TITLES[facts.task])
    if facts.merge is not None:
        kind = f"merged {kind}"
    return f"PEFT adapter: {kind}" if facts.adapter is not None else kind


def what_it_is(facts: ModelFacts, record: RunRecord, scope: Scope) -> str:
    """One paragraph: the task and the kind of model, then how it came to be."""
    labels = f"{len(facts.labels)} labels ({listed(facts.labels)})"
    architecture = f" ({facts.architecture})" if facts.architecture else ""
    if facts.task == "fractal-scorer":
        text = ("A FRACTAL sentence scorer: it gives every sentence of a response a score in [0, 1], learnt from "
                "labels on whole responses.")
    elif facts.fewshot_head:
        text = (f"A few-shot text classifier over {labels}: a sentence-transformers encoder tuned on contrastive "
                f"pairs of the training texts, then a {facts.fewshot_head} head on its embeddings.")
    elif facts.task == "token-classification":
        types = facts.entity_types
        text = (f"An NER student: a token classifier{architecture} that tags {len(types)} entity types "
                f"({listed(types)}) with IOB2 labels.")
    elif facts.relation_markers:
        text = (f"A relation classifier{architecture}: it reads a sentence in which one entity pair is marked "
                f"`[E1]...[/E1]` and `[E2]...[/E2]` and gives the pair one of {labels}.")
    elif facts.task == "text-classification":
        text = f"A {'multi' if facts.multi_label else 'single'}-label text classifier{architecture} over {labels}."
    elif facts.task == "text-generation":
        text = f"A causal language model{architecture}{causal_history(facts, record)}."
    elif facts.task == "fill-mask":
        text = f"A masked language model{architecture}."
    else:
        text = f"An encoder{architecture} without a task head."
    if facts.merge is not None and facts.task != "text-generation":
        text += f" It is a {(facts.merge.get('config') or {}).get('method', '')} merge of its inputs."
    if facts.adapter is not None:
        text += (f" This directory holds a PEFT {facts.adapter.get('peft_type', '')} adapter of it, to be put on "
                 "its base model.")
    if scope.task:
        tasks = record.config.get("tasks") or {}
        text += (f" It is the `{scope.task}` task ({scope.config.get('type')}) of a multi-task run that trained one "
                 f"shared encoder for {len(tasks)} tasks ({listed(list(tasks))}) at once, exported with the shared "
                 "encoder and this task's head.")
    stage = facts.directory.parent
    if (stage / "stage.json").is_file():
        text += (f" It is the result of the `{stage.name}` stage of its run, before the task training; the run's task "
                 "model is in `model/`.")
    return text


def causal_history(facts: ModelFacts, record: RunRecord) -> str:
    config = record.config
    if "instruct" in config and "corpus" in config:
        return (": a domain instruction model made without instruction data, by adding the chat vector "
                "(instruct − base) to the base model continually pretrained on the domain corpus")
    if facts.merge is not None:
        return f", a {(facts.merge.get('config') or {}).get('method', '')} merge of its inputs"
    if "scores" in config and "bags" in config:
        return ", fine-tuned by SFT with each response token's loss weighted by its FRACTAL sentence score"
    return {"cpt": ", continually pretrained on domain text", "sft": ", fine-tuned on conversations (SFT)"}.get(
        config.get("mode"), "")


def base_model_text(facts: ModelFacts, bases: list[str]) -> str:
    if not bases:
        return "Not recorded."
    lines = [f"- `{base}`" + (f" (on the Hub: [{hub}](https://huggingface.co/{hub}))" if (hub := hub_name(base))
                              else " (a local model)") for base in bases]
    intro = "The merge's inputs (the base model first):" if facts.merge is not None and len(bases) > 1 else ""
    return "\n".join(([intro] if intro else []) + lines)


def method_text(facts: ModelFacts, record: RunRecord, scope: Scope) -> str:
    lines = [f"Made by adaptlab {__version__}: {record.title}."]
    if facts.merge is not None:
        report = facts.merge
        actions = ", ".join(f"{n} {action}" for action, n in (report.get("actions") or {}).items())
        lines.append(f"- merge method: `{(report.get('config') or {}).get('method')}`, output dtype "
                     f"{report.get('output_dtype')}, {report.get('tensors')} tensors ({actions})")
    mode = scope.config.get("mode")
    if isinstance(mode, str):
        lines.append(f"- mode: `{mode}`")
    strategies = scope.config.get("strategy")
    if strategies:
        summaries = scope.metrics.get("strategies") or record.metrics.get("strategies") or {}
        lines += [f"- strategy `{name}`: {strategy_settings(name, settings)}"
                  f"{summary_text(summaries.get(name), settings)}" for name, settings in strategies.items()]
    elif isinstance(strategies, dict):
        lines.append("- strategies: none (every weight was trained)")
    training = scope.config.get("training")
    if isinstance(training, dict) and facts.merge is None and facts.fewshot_head is None:  # few-shot: its own steps
        shown = {key: training[key] for key in TRAINING_KEYS
                 if training.get(key) is not None and not (key == "max_steps" and training[key] <= 0)
                 and not (key == "gradient_accumulation_steps" and training[key] == 1)}
        steps = (scope.metrics.get("training_plan") or {}).get("trained_steps", scope.metrics.get("steps"))
        lines.append("- training: " + ", ".join(f"{key}={value}" for key, value in shown.items())
                     + (f"; {steps} optimizer steps" if steps is not None else ""))
    return "\n".join(lines)


def strategy_settings(name: str, settings: Any) -> str:
    """The settings of strategy ``name`` that differ from its defaults (all of them when unknown)."""
    if not isinstance(settings, dict):
        return str(settings)
    from adaptlab.tuning.strategies import REGISTRY

    fields = REGISTRY[name][0].model_fields if name in REGISTRY else {}
    changed = {key: value for key, value in settings.items() if key not in QUIET_SETTINGS and (
        key not in fields or fields[key].is_required() or fields[key].get_default(call_default_factory=True) != value)}
    return ", ".join(f"{key}={compact(value)}" for key, value in changed.items()) or "its defaults"


def summary_text(summary: Any, settings: Any) -> str:
    """What the strategy reported about itself (trainable parameters, ...), but for its settings again."""
    if not isinstance(summary, dict):
        return ""
    given = settings if isinstance(settings, dict) else {}
    facts = {key: value for key, value in summary.items()
             if isinstance(value, int | float | str | bool) and given.get(key, object()) != value}
    return f" ({', '.join(f'{key}: {compact(value)}' for key, value in list(facts.items())[:6])})" if facts else ""


def mergekit_yaml(facts: ModelFacts) -> str | None:
    """The ``mergekit_config.yml`` the merge engine wrote beside the merged weights, if it wrote one."""
    from adaptlab.merge.engine import MERGEKIT_CONFIG

    path = facts.directory / MERGEKIT_CONFIG
    return path.read_text(encoding="utf-8") if path.is_file() else None


def mergekit_text(facts: ModelFacts) -> str:
    text = mergekit_yaml(facts)
    if text is not None:
        return ("The same merge as a mergekit config (`mergekit_config.yml` beside the weights); `mergekit-yaml` "
                "and `adaptlab merge` both run it:\n\n" + fenced("yaml", text))
    reason = str((facts.merge or {}).get("mergekit_config") or "").removeprefix("not written: ")
    return (f"This merge has no mergekit equivalent: {reason or 'the merge report does not say why'}. "
            "Its adaptlab config below is the exact record; `adaptlab merge` reruns it.")
