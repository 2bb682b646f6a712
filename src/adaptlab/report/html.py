"""Self-contained HTML reports (``report.html`` in every run directory).

A report is a title and a list of :class:`Section` objects; a section is a heading and a list of
blocks: :class:`Paragraph`, :class:`KeyValues`, :class:`Table`, :class:`Image` and :class:`RawHTML`. The output is
one file with inline CSS and images embedded as ``data:image/png;base64,...`` URIs: it opens
offline, can be mailed or attached to an issue, and never fetches anything. There is no
JavaScript. Every string that comes from data (labels, texts, config values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.report import plots
from adaptlab.runs import atomic_write_text


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class KeyValues:
    """A two-column table of ``(key, value)`` pairs (a dict keeps its order)."""

    items: Mapping[str, Any] | Sequence[tuple[str, Any]]
    caption: str | None = None


@dataclass(frozen=True)
class Table:
    header: Sequence[Any]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None


@dataclass(frozen=True)
class Image:
    """A PNG; None when the plot could not be drawn (:func:`adaptlab.report.plots.drawn`), shown as a note."""

    png: bytes | None
    alt: str = ""
    caption: str | None = None


@dataclass(frozen=True)
class RawHTML:
    """Markup built (and escaped) by adaptlab code, e.g. sentences coloured by score; never user text."""

    markup: str


Block = Paragraph | KeyValues | Table | Image | RawHTML


@dataclass
class Section:
    heading: str
    blocks: list[Block] = field(default_factory=list)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: .3rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; }
p { white-space: pre-wrap; }
"""


def format_value(value: Any) -> str:
    """Cell text: floats with 4 decimals, ``nan`` and ``None`` (not measured) as a dash, else ``str``; not escaped."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _cell(value: Any, tag: str = "td") -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    css = ' class="num"' if numeric and tag == "td" else ""
    return f"<{tag}{css}>{html.escape(format_value(value))}</{tag}>"


def _caption(caption: str | None) -> str:
    return f"<caption>{html.escape(caption)}</caption>" if caption else ""


def render_block(block: Block) -> str:
    """HTML for one block; every piece of text is escaped."""
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, KeyValues):
        items = block.items.items() if isinstance(block.items, Mapping) else block.items
        rows = "".join(f"<tr>{_cell(k, 'th')}{_cell(v)}</tr>" for k, v in items)
        return f"<table>{_caption(block.caption)}{rows}</table>"
    if isinstance(block, Table):
        head = "".join(_cell(h, "th") for h in block.header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in block.rows)
        return f"<table>{_caption(block.caption)}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Image):
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        if block.png is None:
            note = f"{block.alt}: {plots.NOT_DRAWN}" if block.alt else plots.NOT_DRAWN
            return f"<figure><p>{html.escape(note)}</p>{caption}</figure>"
        data = base64.b64encode(block.png).decode("ascii")
        img = f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
        return f"<figure>{img}{caption}</figure>"
    if isinstance(block, RawHTML):
        return block.markup
    raise TypeError(f"unknown report block {type(block).__name__}; use Paragraph, KeyValues, Table, Image or RawHTML")


def render_report(title: str, sections: Sequence[Section]) -> str:
    """The whole report as one self-contained HTML document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.heading)}</h2>")
        parts.extend(render_block(block) for block in section.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Render and write atomically (temp file + rename), so a crash never leaves half a report."""
    return atomic_write_text(path, render_report(title, sections))


_VIEWS = (("strict", "exact span"), ("overlap", "overlapping span"), ("token", "word level"))


def ner_report_sections(metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None = None
                        ) -> list[Section]:
    """The standard NER report sections from :func:`adaptlab.metrics.spans.ner_report` output.

    Headline (strict / overlap / token, micro and macro), per-type table and F1 bars, word
    confusion heatmap, and the learning curve when a Trainer-style ``history`` is given. Views
    missing from ``metrics`` are skipped, so a partial ``metrics.json`` still renders.
    """
    views = [(name, what) for name, what in _VIEWS if name in metrics]
    sections: list[Section] = []

    rows = []
    for name, what in views:
        m = metrics[name]
        rows.append([f"{name} ({what})", m["micro"]["precision"], m["micro"]["recall"], m["micro"]["f1"],
                     m["macro"]["precision"], m["macro"]["recall"], m["macro"]["f1"]])
    summary: list[Block] = []
    if "counts" in metrics:
        summary.append(KeyValues({k.replace("_", " "): v for k, v in metrics["counts"].items()}))
    if rows:
        summary.append(Table(["matching", "micro P", "micro R", "micro F1", "macro P", "macro R", "macro F1"],
                             rows))
        summary.append(Paragraph(
            "strict: start, end and type must all match. overlap: a prediction of the right type that "
            "shares at least one character with an unmatched gold span counts (one-to-one). token: "
            "each word scored by its type. Macro averages are over the gold types."))
    if summary:
        sections.append(Section("Summary", summary))

    types = list(dict.fromkeys(t for name, _ in views for t in metrics[name]["per_type"]))
    if types:
        header = ["type", "gold spans"]
        for name, _ in views:
            header += [f"{name} P", f"{name} R", f"{name} F1"]
        table_rows = []
        for t in types:
            row: list[Any] = [t, ""]
            for name, _ in views:
                if name != "token" and t in metrics[name]["per_type"]:
                    row[1] = metrics[name]["per_type"][t]["support"]
                scores = metrics[name]["per_type"].get(t)
                row += [scores["precision"], scores["recall"], scores["f1"]] if scores else ["", "", ""]
            table_rows.append(row)
        bars = {name: {t: s["f1"] for t, s in metrics[name]["per_type"].items()} for name, _ in views}
        sections.append(Section("Per type", [
            Table(header, table_rows),
            Image(plots.per_type_f1_bars(bars), alt="F1 per entity type", caption="F1 per type and matching"),
        ]))

    confusion = metrics.get("confusion")
    if confusion and confusion.get("labels"):
        sections.append(Section("Word confusion", [
            Paragraph("Rows are gold word types, columns predicted; colour is the share of the gold row, "
                      "numbers are word counts. Off-diagonal cells in the O row/column are spurious/missed "
                      "entities; other off-diagonal cells are type confusions."),
            Image(plots.confusion_heatmap(confusion["labels"], confusion["matrix"]),
                  alt="word type confusion matrix"),
        ]))

    if history:
        sections.append(Section("Learning curve", [
            Image(plots.learning_curve(history), alt="training loss and evaluation metrics per epoch"),
        ]))
    return sections


def cls_report_sections(report: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]] | None = None
                        ) -> list[Section]:
    """The text-classification report sections from :func:`adaptlab.metrics.classification.text_classification_report`.

    Headline numbers, per-class P/R/F1 with F1 bars, the confusion matrix as a heatmap, and the learning curve when
    a Trainer-style ``history`` is given; a missing report (no dev set) leaves only the curve.
    """
    sections: list[Section] = []
    if report:
        headline = {"examples": report["examples"], "accuracy": report["accuracy"], "macro F1": report["macro_f1"],
                    "micro F1": report["micro_f1"], "weighted F1": report["weighted_f1"]}
        if report.get("multi_label"):
            headline["subset accuracy (exact set)"] = report["subset_accuracy"]
        note = ("Multi-label: a label is predicted when its sigmoid probability is at least 0.5; accuracy is the "
                "share of texts whose predicted label set equals the gold set." if report.get("multi_label") else
                "Macro F1 is the unweighted mean over the labels present in gold or predictions; micro F1 equals "
                "accuracy when each text has one label.")
        sections.append(Section("Summary", [KeyValues(headline), Paragraph(note)]))
        per_class = report["per_class"]
        sections.append(Section("Per class", [
            Table(["label", "precision", "recall", "F1", "support"],
                  [[label, s["precision"], s["recall"], s["f1"], s["support"]] for label, s in per_class.items()]),
            Image(plots.per_type_f1_bars({"F1": {label: s["f1"] for label, s in per_class.items()}},
                                         title="F1 per class"), alt="F1 per class"),
        ]))
        confusion = report.get("confusion")
        if confusion and confusion.get("labels"):
            what = ("texts with gold label (row) that got the predicted label (column); a text counts once per "
                    "pair of its gold and predicted labels" if report.get("multi_label") else "text counts")
            sections.append(Section("Confusion matrix", [
                Paragraph(f"Rows are gold labels, columns predicted; colour is the share of the gold row, numbers "
                          f"are {what}."),
                Image(plots.confusion_heatmap(confusion["labels"], confusion["matrix"]), alt="confusion matrix"),
            ]))
    if history:
        sections.append(Section("Learning curve", [
            Image(plots.learning_curve(history), alt="training loss and evaluation metrics per epoch"),
        ]))
    return sections
