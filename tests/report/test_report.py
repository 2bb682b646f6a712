"""HTML report: every block type renders, images are embedded PNGs, user text is escaped."""

from __future__ import annotations

import base64
import re

import pytest

from adaptlab.data.records import Record, Span
from adaptlab.metrics.spans import ner_report
from adaptlab.report import plots
from adaptlab.report.html import (
    Image,
    KeyValues,
    Paragraph,
    Section,
    Table,
    ner_report_sections,
    render_report,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {"epoch": 0.5, "step": 5, "loss": 1.2, "learning_rate": 4e-5, "grad_norm": 3.0},
    {"epoch": 1.0, "step": 10, "loss": 0.8},
    {"epoch": 1.0, "step": 10, "eval_loss": 0.9, "eval_f1": 0.55, "eval_runtime": 1.2},
    {"epoch": 2.0, "step": 20, "loss": 0.4},
    {"epoch": 2.0, "step": 20, "eval_loss": 0.7, "eval_f1": 0.71, "eval_precision": 0.7},
    {"epoch": 2.0, "step": 20, "train_loss": 0.7, "train_runtime": 10.0},
]


def embedded_pngs(document: str) -> list[bytes]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)
    return [base64.b64decode(m) for m in found]


def test_render_all_block_types_and_escape_user_text(tmp_path):
    png = plots.per_type_f1_bars({"strict": {"A": 0.5, "B": 1.0}, "overlap": {"A": 0.75}})
    sections = [
        Section("Intro <script>alert('s')</script>", [
            Paragraph("Text with <script>alert(1)</script> & more"),
            KeyValues({"model": "<b>bert</b>", "f1": 0.123456, "epochs": 3}, caption="run & config"),
            Table(["type", "f1"], [["<i>A</i>", 0.5], ["B", float("nan")]], caption="per <type>"),
            Image(png, alt='bars "quoted"', caption="F1 <bars>"),
        ]),
    ]
    document = render_report("Report <title>", sections)
    assert document.startswith("<!DOCTYPE html>")
    assert "<script>" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in document
    assert "&lt;b&gt;bert&lt;/b&gt;" in document and "&lt;i&gt;A&lt;/i&gt;" in document
    assert "<title>Report &lt;title&gt;</title>" in document
    assert 'alt="bars &quot;quoted&quot;"' in document
    assert '<td class="num">0.1235</td>' in document and '<td class="num">3</td>' in document
    assert "<caption>per &lt;type&gt;</caption>" in document
    assert "–" in document  # nan renders as a dash
    images = embedded_pngs(document)
    assert len(images) == 1 and images[0] == png and images[0].startswith(PNG_MAGIC)
    # self-contained: nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', document)
    assert "http://" not in document and "https://" not in document

    path = write_report(tmp_path / "run" / "report.html", "Report <title>", sections)
    assert path.read_text(encoding="utf-8") == document
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left behind


def test_unknown_block_is_rejected():
    with pytest.raises(TypeError, match="unknown report block"):
        render_report("t", [Section("s", ["just a string"])])


def test_plots_return_png_including_empty_inputs():
    for png in (
        plots.per_type_f1_bars({}),
        plots.per_type_f1_bars({"strict": {f"T{k}": k / 10 for k in range(8)}}),
        plots.confusion_heatmap(["A", "O"], [[3, 1], [0, 0]]),  # an empty gold row is fine
        plots.learning_curve(HISTORY),
        plots.learning_curve([]),
        plots.learning_curve([{"step": 1, "loss": 2.0}]),
    ):
        assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_split_history_keeps_curves_only():
    train, evaluation = plots.split_history(HISTORY)
    assert train == {"loss": [(0.5, 1.2), (1.0, 0.8), (2.0, 0.4)]}
    assert evaluation == {
        "eval_loss": [(1.0, 0.9), (2.0, 0.7)],
        "eval_f1": [(1.0, 0.55), (2.0, 0.71)],
        "eval_precision": [(2.0, 0.7)],
    }


def test_ner_report_sections_end_to_end(tmp_path):
    text = "Frogs live in ponds near Lake <Erie> ."
    gold = [Record(text, [Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT"), Span(25, 36, "HABITAT")])]
    pred = [Record(text, [Span(0, 10, "SPECIES"), Span(25, 29, "HABITAT")])]
    metrics = ner_report(gold, pred)
    sections = ner_report_sections(metrics, HISTORY)
    assert [s.heading for s in sections] == ["Summary", "Per type", "Word confusion", "Learning curve"]
    document = render_report("NER <eval>", sections)
    images = embedded_pngs(document)
    assert len(images) == 3 and all(p.startswith(PNG_MAGIC) for p in images)
    assert "strict (exact span)" in document and "HABITAT" in document
    assert f"{metrics['overlap']['micro']['f1']:.4f}" in document
    # without history there is no learning curve; a partial metrics dict still renders
    assert [s.heading for s in ner_report_sections(metrics)][-1] == "Word confusion"
    partial = {"strict": metrics["strict"]}
    assert [s.heading for s in ner_report_sections(partial)] == ["Summary", "Per type"]
    assert render_report("partial", ner_report_sections(partial)).count("data:image/png;base64,") == 1
