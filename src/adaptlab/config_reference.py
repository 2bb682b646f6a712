"""The config reference (``docs/config-reference.md``), generated from the pydantic models.

Every key a command's CONFIG accepts is a field of a :class:`~adaptlab.config.StrictModel`, with its type, default
and ``description=``; this module walks those models and writes one Markdown table per command, so the reference
cannot drift from the code (a test regenerates it and compares). Keys are written dotted, as on the command line
(``training.learning_rate=3e-5``): a nested section's keys are expanded under its name, ``[]`` marks a list of
sections (``models[].weight``) and ``<name>`` a mapping of them (``tasks.<name>.train``). Sections that several
commands share (``training:``, ``strategy:``, ``teacher:``, FRACTAL's ``train:``) get one table of their own, linked
from each command. The ``strategy:`` sections come from the strategy registry, so a new strategy appears here
without an edit. The output depends only on the models: no paths, no environment (a default computed at run time,
such as a cache folder, is shown by its factory's docstring).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REGENERATE = "adaptlab config reference --output docs/config-reference.md"

# (command, "module:Class") of every command whose CONFIG is a pydantic model, in the order of `adaptlab --help`
COMMANDS: tuple[tuple[str, str], ...] = (
    ("adaptlab ner train", "adaptlab.recipes.ner:NERTrainConfig"),
    ("adaptlab ner evaluate", "adaptlab.recipes.ner:NEREvalConfig"),
    ("adaptlab re train", "adaptlab.recipes.relations:RETrainConfig"),
    ("adaptlab re evaluate", "adaptlab.recipes.relations:REEvalConfig"),
    ("adaptlab cls train", "adaptlab.recipes.cls:ClsTrainConfig"),
    ("adaptlab cls evaluate", "adaptlab.recipes.cls:ClsEvalConfig"),
    ("adaptlab multitask train", "adaptlab.recipes.multitask:MultitaskConfig"),
    ("adaptlab synth generate", "adaptlab.synth.config:SynthConfig"),
    ("adaptlab teacher zero-shot-ner", "adaptlab.recipes.zero_shot:ZeroShotConfig"),
    ("adaptlab merge run", "adaptlab.merge.config:MergeConfig"),
    ("adaptlab merge search", "adaptlab.merge.search:SearchConfig"),
    ("adaptlab fractal train", "adaptlab.recipes.fractal:FractalTrainRunConfig"),
    ("adaptlab fractal evaluate", "adaptlab.recipes.fractal:FractalEvalConfig"),
    ("adaptlab fractal sft", "adaptlab.recipes.fractal_sft:FractalSFTConfig"),
    ("adaptlab lm prepare", "adaptlab.recipes.lm_prepare:PrepareConfig"),
    ("adaptlab lm train", "adaptlab.lm.train:LMTrainConfig"),
    ("adaptlab lm evaluate", "adaptlab.recipes.lm_evaluate:LMEvalConfig"),
    ("adaptlab domain-instruct run", "adaptlab.recipes.domain_instruct:DomainInstructConfig"),
)
# shared sections other than training: and strategy: -> the key they sit under
SHARED: tuple[tuple[str, str], ...] = (
    ("teacher", "adaptlab.teacher.config:TeacherConfig"),
    ("train", "adaptlab.fractal.train:FractalTrainConfig"),
)
TRAINER_SETTINGS = "adaptlab.tuning.settings:TrainerSettings"
STRATEGY_BLOCK = "adaptlab.tuning.strategies:StrategyBlock"
NOTES = {  # a line under a command's heading that the models cannot say
    "adaptlab merge run": "`adaptlab merge CONFIG` is the same command. A mergekit YAML (`merge_method`, "
                          "`models[].parameters`, ...) is read as it is and translated into these keys.",
}


def load(spec: str) -> type[BaseModel]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Section:
    """One table of the reference: a model, the dotted prefix of its keys, and its heading."""

    title: str  # the heading's text: `adaptlab ner train`, `training:`, `strategy.peft:`
    model: type[BaseModel]
    prefix: str = ""
    base: type[BaseModel] | None = None  # TrainerSettings subclasses: only what differs from this base is listed
    note: str = ""

    @property
    def is_command(self) -> bool:
        return self.title.startswith("`adaptlab ")


def strategy_sections() -> list[Section]:
    """One section per registered strategy, in registry order (the order they prepare the model)."""
    from adaptlab.tuning.strategies import REGISTRY

    return [Section(f"`strategy.{name}:`", config, f"strategy.{name}.") for name, (config, _) in REGISTRY.items()]


def trainer_settings_sections(commands: list[Section]) -> list[Section]:
    """TrainerSettings, then every subclass some command uses, parents before children, by name."""
    root = load(TRAINER_SETTINGS)
    used: set[type] = set()
    for section in commands:
        for _, field in walk_fields(section.model):
            for model in models_in(field.annotation):
                if issubclass(model, root):
                    used.update(c for c in model.__mro__ if isinstance(c, type) and issubclass(c, root))
    # depth first: each subclass right after its parent, siblings by name
    ordered = sorted(used - {root}, key=lambda c: [k.__name__ for k in reversed(c.__mro__) if k in used])
    return [Section("`training:`", root, "training.")] + [
        Section(f"`training:` {cls.__name__}", cls, "training.", base=cls.__mro__[1]) for cls in ordered]


def sections() -> tuple[list[Section], list[Section]]:
    """(command sections, shared sections), in the order they are written."""
    commands = [Section(f"`{command}`", load(spec), note=NOTES.get(command, "")) for command, spec in COMMANDS]
    shared = trainer_settings_sections(commands) + [Section("`strategy:`", load(STRATEGY_BLOCK), "strategy.")]
    shared += strategy_sections()
    shared += [Section(f"`{key}:`", load(spec), f"{key}.") for key, spec in SHARED]
    return commands, shared


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation names (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in models_in(arg)]


def walk_fields(model: type[BaseModel], prefix: str = "", links: dict[type, str] | None = None
                ) -> list[tuple[str, FieldInfo]]:
    """Every (dotted key, field) of ``model``, nested sections expanded below their own key, except those in
    ``links`` (sections with a table of their own)."""
    rows = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        rows.append((key, field))
        nested = models_in(field.annotation)
        if len(nested) == 1 and nested[0] not in (links or {}):
            rows += walk_fields(nested[0], key + container_suffix(field.annotation) + ".", links)
    return rows


def container_suffix(annotation: Any) -> str:
    """``[]`` for a list of sections, ``.<name>`` for a mapping of them, nothing for one section."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return "".join(container_suffix(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is list:
        return "[]"
    if origin is dict:
        return ".<name>"
    return ""


# ---- rendering ---------------------------------------------------------------------------------------------

def anchor(title: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def type_name(annotation: Any, links: dict[type, str]) -> str:
    """A readable type: ``float``, ``int | null``, ``auto | true | false``, ``list[str]``, a link to a section."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{links[annotation]})" if annotation in links else "section"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) if not isinstance(a, str) else a for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a, links) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0], links)
    if origin in (list, tuple, set):
        return f"list[{', '.join(type_name(a, links) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"dict[{', '.join(type_name(a, links) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: FieldInfo) -> str:
    """The field's bounds from its metadata: ``> 0``, ``≥ 0, ≤ 1``, ``length ≥ 1``, ``matches `regex```."""
    marks = {Gt: ("gt", "> {}"), Ge: ("ge", "≥ {}"), Lt: ("lt", "< {}"), Le: ("le", "≤ {}"),
             MinLen: ("min_length", "length ≥ {}"), MaxLen: ("max_length", "length ≤ {}")}
    parts = []
    for item in field.metadata:
        for kind, (attribute, template) in marks.items():
            if isinstance(item, kind):
                parts.append(template.format(getattr(item, attribute)))
        if getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    """The default as YAML/JSON would write it; ``required``; or what a factory computes, from its docstring."""
    factory = field.default_factory
    doc = None if factory is None or isinstance(factory, type) else inspect.getdoc(factory)
    if doc:  # computed at run time (a cache folder): say how, so the reference stays the same everywhere
        return prose(" ".join(doc.split("\n\n")[0].split()))
    if factory is not None:
        value = factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):  # a section: its own rows give the defaults; show only what this one changes
        changed = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return "`" + json.dumps(changed, ensure_ascii=False) + "`" if changed else ""
    return "`" + json.dumps(plain(value), ensure_ascii=False) + "`"


def plain(value: Any) -> Any:
    """A default as JSON can write it (a path or an enum as its string)."""
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def cell(text: str) -> str:
    """Text for one table cell: on one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def prose(text: str) -> str:
    """Docstring or description text as Markdown: RST literals as code, and ``<`` outside code as ``&lt;`` so that
    ``runs/<time>-<name>`` is not read as HTML tags."""
    parts = rst_to_markdown(text).split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def rst_to_markdown(text: str) -> str:
    """A docstring's RST literals and roles as Markdown code."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def summary(model: type[BaseModel]) -> str:
    """The first paragraph of the model's own docstring (not one inherited from a base class)."""
    doc = model.__doc__ if "__doc__" in vars(model) else None
    return prose(" ".join(inspect.cleandoc(doc).split("\n\n")[0].split())) if doc else ""


def table(section: Section, links: dict[type, str]) -> list[str]:
    """The section's rows; for a TrainerSettings subclass only the rows that differ from its base."""
    own_links = {model: target for model, target in links.items() if model is not section.model}
    rows = rendered_rows(section.model, section.prefix, own_links)
    if section.base is not None:
        inherited = set(rendered_rows(section.base, section.prefix, own_links))
        rows = [row for row in rows if row not in inherited]
    return ["| key | type | default | description |", "|---|---|---|---|", *rows]


def rendered_rows(model: type[BaseModel], prefix: str, links: dict[type, str]) -> list[str]:
    rows = []
    for key, field in walk_fields(model, prefix, links):
        kind = type_name(field.annotation, links)
        bounds = constraints(field)
        kind = f"{kind} ({bounds})" if bounds else kind
        rows.append(f"| `{cell(key)}` | {cell(kind)} | {cell(default_text(field))} | "
                    f"{cell(prose(field.description or ''))} |")
    return rows


def used_by(model: type[BaseModel], commands: list[Section], links: dict[type, str]) -> list[str]:
    """The commands whose config holds ``model`` itself (not through another shared section)."""
    return [s.title for s in commands if any(model in models_in(f.annotation)
                                             for _, f in walk_fields(s.model, "", links))]


def render() -> str:
    """The whole reference as Markdown; the same models always give the same text."""
    commands, shared = sections()
    links: dict[type, str] = {s.model: anchor(s.title) for s in commands + shared}
    lines = [
        "# Config reference",
        "",
        f"Generated from the pydantic models by `{REGENERATE}`; do not edit it by hand.",
        "",
        "Every command below takes an optional CONFIG (a YAML file, or a shipped example's name: `adaptlab config "
        "list`), then `key=value` overrides, then flags; later wins. A dotted key is a nested YAML key: "
        "`training.learning_rate=3e-5` on the command line is `training: {learning_rate: 3.0e-5}` in the file. "
        "`[]` marks a list of sections (`models[].weight`), `<name>` a mapping of them (`tasks.<name>.train`). "
        "An unknown key or a value of the wrong type is an error naming the key. Sections shared by several "
        "commands (`training:`, `strategy:`, `teacher:`, FRACTAL's `train:`) have a table of their own below.",
        "",
        "## Commands",
        "",
        *(f"- [{s.title}](#{links[s.model]})" for s in commands),
        "",
        "## Shared sections",
        "",
        *(f"- [{s.title}](#{links[s.model]})" for s in shared),
    ]
    for section in commands + shared:
        lines += ["", f"## {section.title}", "", *intro(section, commands, links), ""]
        lines += table(section, links)
    return "\n".join(lines) + "\n"


def intro(section: Section, commands: list[Section], links: dict[type, str]) -> list[str]:
    """The lines under a heading: the model's import path and docstring summary, what it shares, who uses it."""
    about = "" if section.is_command else summary(section.model)  # a command's says "Config of <the heading>"
    paragraphs = [f"Model `{section.model.__module__}.{section.model.__name__}`." + (f" {about}" if about else "")]
    if section.note:
        paragraphs.append(section.note)
    users = [] if section.is_command else used_by(section.model, commands, links)
    if users:
        paragraphs.append("Used by " + ", ".join(users) + ".")
    if section.base is not None:
        paragraphs.append(f"Every key of [{section.base.__name__}](#{links[section.base]}), with these changes:")
    return [line for paragraph in paragraphs for line in (paragraph, "")][:-1]


def missing_descriptions() -> list[str]:
    """``module.Class.field`` of every documented key without a ``description=``, named where it is declared."""
    commands, shared = sections()
    missing = {declared_in(model, name) for section in commands + shared for model in all_models(section.model)
               for name, field in model.model_fields.items() if not field.description}
    return sorted(missing)


def declared_in(model: type[BaseModel], name: str) -> str:
    """Where the field is written: the first class in the MRO whose own annotations name it."""
    owner = next((c for c in model.__mro__ if name in vars(c).get("__annotations__", {})), model)
    return f"{owner.__module__}.{owner.__qualname__}.{name}"


def all_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every section model below it, each once."""
    found = [model]
    for _, field in walk_fields(model):
        found += [m for m in models_in(field.annotation) if m not in found]
    return found
