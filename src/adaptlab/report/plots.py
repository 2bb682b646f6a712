"""Plots for ``report.html``, returned as PNG bytes.

Figures are built with the object-oriented matplotlib API (``Figure`` + the Agg canvas) rather than
``pyplot``: no global state, no GUI backend, safe in threads and on headless servers, and nothing
leaks between calls. Sizes and DPI are modest so that a report with a handful of images stays a
few hundred kilobytes.

matplotlib is optional (the ``plots`` extra) and imported only when a plot is drawn. A plot function
wrapped in :func:`drawn` returns None without it: the report is written after the work it describes,
and a missing plotting library must not fail a finished run; the report says where a plot was left out.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np

from adaptlab.extras import install_hint
from adaptlab.runs import get_logger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

P = ParamSpec("P")
DPI = 100
NOT_DRAWN = f"plot not drawn: {install_hint('matplotlib')}"
# Keys of Hugging Face Trainer log entries that are bookkeeping, not curves worth plotting.
_NOT_CURVES = {"epoch", "step", "learning_rate", "grad_norm", "total_flos"}
_NOT_CURVE_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def drawn(plot: Callable[P, bytes]) -> Callable[P, bytes | None]:
    """``plot``, returning None (and logging :data:`NOT_DRAWN` once) when matplotlib is not installed."""

    @functools.wraps(plot)
    def draw(*args: P.args, **kwargs: P.kwargs) -> bytes | None:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            _log_not_drawn()
            return None
        return plot(*args, **kwargs)

    return draw


@functools.cache
def _log_not_drawn() -> None:
    get_logger().warning(NOT_DRAWN)


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes (tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _placeholder(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


@drawn
def per_type_f1_bars(metrics_by_name: Mapping[str, Mapping[str, float]], title: str = "F1 per type") -> bytes:
    """Grouped bars: one group per type, one bar per metric name (e.g. strict / overlap / token).

    ``metrics_by_name = {"strict": {"SPECIES": 0.81, ...}, "overlap": {...}}``. Types appear in the
    order first seen; a type missing from one metric gets no bar there. Values are printed above
    bars when there are few enough to read.
    """
    names = list(metrics_by_name)
    types = list(dict.fromkeys(t for scores in metrics_by_name.values() for t in scores))
    fig = new_figure(max(4.0, 1.0 + 0.9 * len(types) * max(1, len(names)) / 2), 3.2)
    ax = fig.add_subplot()
    if not types:
        _placeholder(ax, "no entity types to plot")
        return figure_to_png(fig)
    x = np.arange(len(types))
    width = 0.8 / max(1, len(names))
    annotate = len(types) * len(names) <= 24
    for k, name in enumerate(names):
        values = [metrics_by_name[name].get(t, math.nan) for t in types]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width, label=name)
        if annotate:
            labels = ["" if math.isnan(v) else f"{v:.2f}" for v in values]
            ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks(x, types, rotation=30 if len(types) > 5 else 0, ha="right" if len(types) > 5 else "center")
    ax.set_ylim(0, 1.08)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("F1")
    ax.grid(axis="y", alpha=0.3)
    # legend in its own row between title and axes, so it never covers a bar at F1 = 1
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=max(1, len(names)),
              frameon=False)
    fig.suptitle(title)
    return figure_to_png(fig)


@drawn
def confusion_heatmap(
    labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str = "Confusion"
) -> bytes:
    """Confusion matrix heatmap: rows gold, columns predicted, every cell annotated with its count.

    Colour is the row-normalised share ``matrix[i][j] / sum_j matrix[i][j]`` (the fraction of gold
    ``i`` predicted as ``j``), so a rare type is as readable as a frequent one; an empty row is white.
    """
    counts = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    row_sums = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
    size = max(3.5, 0.55 * len(labels) + 1.8)
    fig = new_figure(size + 0.8, size)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    fontsize = 8 if len(labels) <= 12 else 6
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=fontsize,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    return figure_to_png(fig)


def _is_curve_key(key: str) -> bool:
    return key not in _NOT_CURVES and not key.endswith(_NOT_CURVE_SUFFIXES)


def split_history(history: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list], dict[str, list]]:
    """Split Trainer-style log entries into training and evaluation series ``{name: [(x, y), ...]}``.

    ``x`` is the entry's ``epoch`` (else its ``step``). Training series are ``loss`` entries (not
    ``train_loss``, the end-of-run average); evaluation series are the ``eval_*`` numbers, minus
    runtime bookkeeping.
    """
    train: dict[str, list] = {}
    evaluation: dict[str, list] = {}
    for entry in history:
        x = entry.get("epoch", entry.get("step"))
        if x is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not _is_curve_key(key):
                continue
            if key.startswith("eval_"):
                evaluation.setdefault(key, []).append((float(x), float(value)))
            elif key == "loss":
                train.setdefault(key, []).append((float(x), float(value)))
    return train, evaluation


def _label_curves(ax, ylabel: str, title: str) -> None:
    """Axes, grid, legend and title of a panel of curves over epochs."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


@drawn
def learning_curve(history: Sequence[Mapping[str, Any]], title: str = "Learning curve") -> bytes:
    """Two panels against epoch: losses (train ``loss`` and ``eval_loss``) and other eval metrics.

    ``history`` is a Hugging Face ``Trainer.state.log_history``-like list: ``{"epoch": 1.0,
    "step": 10, "loss": 0.5}`` for training and ``{"epoch": 1.0, "eval_f1": 0.7, "eval_loss": ...}``
    for evaluation. Losses and scores live on different scales, hence separate panels.
    """
    train, evaluation = split_history(history)
    fig = new_figure(9.0, 3.2)
    loss_ax, score_ax = fig.subplots(1, 2)
    losses = {"train loss": train.get("loss", [])}
    if "eval_loss" in evaluation:
        losses["eval loss"] = evaluation["eval_loss"]
    plotted = False
    for name, points in losses.items():
        if points:
            xs, ys = zip(*points, strict=True)
            loss_ax.plot(xs, ys, marker="o" if len(points) <= 30 else None, markersize=3, label=name)
            plotted = True
    if plotted:
        _label_curves(loss_ax, "loss", "loss")
    else:
        _placeholder(loss_ax, "no loss logged")
    scores = {k: v for k, v in evaluation.items() if k != "eval_loss"}
    for name, points in sorted(scores.items()):
        xs, ys = zip(*points, strict=True)
        score_ax.plot(xs, ys, marker="o", markersize=3, label=name.removeprefix("eval_"))
    if scores:
        _label_curves(score_ax, "score", "evaluation")
    else:
        _placeholder(score_ax, "no evaluation metrics logged")
    fig.suptitle(title)
    return figure_to_png(fig)


@drawn
def loss_curve_png(history: list[dict[str, Any]], title: str) -> bytes:
    """Two panels against the optimizer step: training loss, and held-out perplexity per split (log scale)."""
    fig = new_figure(9.0, 3.2)
    loss_ax, ppl_ax = fig.subplots(1, 2)
    train = [(row["step"], row["loss"]) for row in history if "loss" in row]
    if train:
        loss_ax.plot(*zip(*train, strict=True), marker="o" if len(train) <= 30 else None, markersize=3)
    loss_ax.set(xlabel="step", ylabel="training loss (nats/token)", title="training loss")
    loss_ax.grid(alpha=0.3)
    splits = sorted({k.removeprefix("eval_").removesuffix("_perplexity") for row in history for k in row
                     if k.startswith("eval_") and k.endswith("_perplexity")})
    for split in splits:
        points = [(row["step"], row[f"eval_{split}_perplexity"]) for row in history
                  if f"eval_{split}_perplexity" in row]
        ppl_ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=split)
    if splits:
        ppl_ax.set_yscale("log")
        ppl_ax.legend(fontsize=8)
    ppl_ax.set(xlabel="step", ylabel="perplexity", title="held-out perplexity (token-weighted)")
    ppl_ax.grid(alpha=0.3)
    fig.suptitle(title)
    return figure_to_png(fig)
