"""What a saved model directory is, read from its files: the facts a model card states about it.

A directory is a model when it holds ``config.json`` (transformers, sentence-transformers), ``adapter_config.json``
(a PEFT adapter) or ``scorer.json`` (a FRACTAL scorer). Its task comes from the architecture's class name
(``BertForTokenClassification`` -> token-classification), an adapter's PEFT ``task_type`` when it has no
``config.json``, a few-shot head (``fewshot_head.json``), or the merge report beside merged weights.

Base models are named in the card's front matter only when the Hub can resolve them: a hub name, the packaged
MiniLM alias, or a local copy in the Hugging Face cache (``models--ORG--NAME/snapshots/...``). The Hub rejects a
card whose ``base_model`` is a local path, so those are named in the text only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.models.adapters import ADAPTER_CONFIG
from adaptlab.tuning.fewshot_model import HEAD_CONFIG as FEWSHOT_HEAD

MERGE_REPORT = "merge_report.json"  # written by merge.engine.write_merged_model
SCORER = "scorer.json"  # written by fractal.model.save_scorer
MODEL_FILES = ("config.json", ADAPTER_CONFIG, SCORER)
RELATION_MARKER = '"[E1]"'  # the entity marker an RE student's tokenizer gains (data.formats.markers.MARKERS)
TASK_BY_CLASS_SUFFIX = {"ForTokenClassification": "token-classification",
                        "ForSequenceClassification": "text-classification",
                        "ForCausalLM": "text-generation", "ForMaskedLM": "fill-mask"}
TASK_BY_PEFT_TYPE = {"TOKEN_CLS": "token-classification", "SEQ_CLS": "text-classification",
                     "CAUSAL_LM": "text-generation", "FEATURE_EXTRACTION": "feature-extraction"}
PROMPT_LEARNING = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")  # PEFT types that cannot be merged into weights
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
             "default": "sentence-transformers/all-MiniLM-L6-v2"}  # adaptlab's student aliases (ie.models)
HUB_CACHE = re.compile(r"models--([^/\\]+)[/\\]snapshots[/\\]")


@dataclass
class ModelFacts:
    """A model directory as its files describe it.

    ``task``: token-classification, text-classification, text-generation, fill-mask, feature-extraction or
    fractal-scorer. ``library``: the Hub's ``library_name`` (None for adaptlab's own formats).
    """

    directory: Path
    task: str
    library: str | None
    architecture: str | None = None
    labels: list[str] = field(default_factory=list)
    multi_label: bool = False
    relation_markers: bool = False
    fewshot_head: str | None = None
    adapter: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None
    chat_template: bool = False

    @property
    def pipeline_tag(self) -> str | None:
        return None if self.task == "fractal-scorer" else self.task

    @property
    def entity_types(self) -> list[str]:
        """NER labels without their IOB2 prefixes, in label order."""
        return list(dict.fromkeys(label[2:] for label in self.labels if label[:2] in ("B-", "I-")))

    @property
    def mergeable_adapter(self) -> bool:
        return self.adapter is not None and self.adapter.get("peft_type") not in PROMPT_LEARNING


def is_model_directory(path: Path) -> bool:
    return any((path / name).is_file() for name in MODEL_FILES)


def describe_model(directory: Path) -> ModelFacts:
    """The facts of the model in ``directory`` (see the module docstring)."""
    if (directory / SCORER).is_file():
        return ModelFacts(directory, "fractal-scorer", None)
    config = read_json(directory / "config.json") or {}
    adapter = read_json(directory / ADAPTER_CONFIG)
    architecture = next(iter(config.get("architectures") or []), None)
    task = next((task for suffix, task in TASK_BY_CLASS_SUFFIX.items() if (architecture or "").endswith(suffix)),
                None)
    if task is None and adapter is not None:
        task = TASK_BY_PEFT_TYPE.get(str(adapter.get("task_type")))
    id2label = config.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)] if task in TASK_BY_CLASS_SUFFIX.values() else []
    facts = ModelFacts(directory, task or "feature-extraction", "peft" if adapter is not None else "transformers",
                       architecture, labels, config.get("problem_type") == "multi_label_classification",
                       adapter=adapter, merge=read_json(directory / MERGE_REPORT),
                       chat_template=has_chat_template(directory))
    head = read_json(directory / FEWSHOT_HEAD)
    if head is not None:
        facts.task, facts.library, facts.fewshot_head = "text-classification", "sentence-transformers", head["head"]
        facts.labels, facts.multi_label = list(head["labels"]), bool(head["multi_label"])
    facts.relation_markers = facts.task == "text-classification" and any(
        RELATION_MARKER in text for text in (read_text(directory / name) for name in (
            "tokenizer.json", "tokenizer_config.json", "added_tokens.json")))
    return facts


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def has_chat_template(directory: Path) -> bool:
    """The tokenizer saved in ``directory`` has a chat template (transformers 5 saves it as chat_template.jinja)."""
    settings = read_json(directory / "tokenizer_config.json") or {}
    return bool(settings.get("chat_template")) or (directory / "chat_template.jinja").is_file()


def base_models(facts: ModelFacts, config: dict[str, Any]) -> list[str]:
    """The models this one was made from, as the run named them: an adapter's base, a merge's inputs (base
    first), else the run config's ``model`` (or ``base`` for domain-instruct)."""
    if facts.adapter is not None and facts.adapter.get("base_model_name_or_path"):
        return [str(facts.adapter["base_model_name_or_path"])]
    if facts.merge is not None:
        merge = facts.merge.get("config") or {}
        names = [merge.get("base_model"), *(entry.get("model") for entry in merge.get("models") or [])]
        return list(dict.fromkeys(str(name) for name in names if name))
    name = config.get("model") or config.get("base")
    return [str(name)] if isinstance(name, str) and name else []


def hub_name(name: str) -> str | None:
    """``name`` as a Hub repository id, or None for a local model the Hub does not know (module docstring)."""
    if name in HUB_NAMES:
        return HUB_NAMES[name]
    cached = HUB_CACHE.search(name)
    if cached:
        return cached.group(1).replace("--", "/")
    if Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.endswith(".gguf"):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name
