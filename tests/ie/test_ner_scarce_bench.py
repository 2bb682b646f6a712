"""benchmarks/ner_scarce.py: its folds and nested draws, the targets it judges, and the refusal of a k the pool
cannot give (exit 2, nothing written). Runs on a small CoNLL file of its own, without the shared data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling modules
    spec = importlib.util.spec_from_file_location("ner_scarce", BENCHMARKS / "ner_scarce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def small_data(tmp_path) -> Path:
    """96 distinct annotated sentences: the fixed 80-sentence test fold leaves a pool of 16."""
    lines = []
    for i in range(96):
        frog = [f"Frog{i} B-SPECIES"]
        lines += [*frog, "live O", "in O", f"pond{i}; B-HABITAT", *frog, "feed O", "on O", "flies; B-FEEDING",
                  *frog, "breed O", "by O", "laying B-BREEDING", "eggs. I-BREEDING", ""]
    path = tmp_path / "ner.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_folds_are_fixed_and_draws_nested_seeded_and_complementary(bench, small_data):
    test, pool = bench.load_folds(small_data)
    assert len(test) == bench.TEST_SIZE and len(pool) == 16
    assert not {r.text for r in test} & {r.text for r in pool}
    assert [r.text for r in bench.load_folds(small_data)[0]] == [r.text for r in test]

    eight, rest = bench.draw(pool, "8", 0)
    sixteen, none_left = bench.draw(pool, "16", 0)
    assert [r.text for r in sixteen[:8]] == [r.text for r in eight]  # the 8 of a draw are among its 16
    assert sorted([r.text for r in eight] + rest) == sorted(r.text for r in pool) and none_left == []
    assert [r.text for r in bench.draw(pool, "8", 0)[0]] == [r.text for r in eight]
    assert [r.text for r in bench.draw(pool, "8", 1)[0]] != [r.text for r in eight]
    everything, _ = bench.draw(pool, "all", 2)
    assert sorted(r.text for r in everything) == sorted(r.text for r in pool)


def cell(recipe: str, k: str, f1s: list[float]) -> dict:
    return {"recipe": recipe, "k": k, "draws": len(f1s),
            "strict": {"mean": sum(f1s) / len(f1s), "min": min(f1s)}}


def test_targets_take_the_best_recipe_and_the_worst_plain_draw(bench):
    cells = [cell("a", "16", [0.70, 0.49, 0.75]), cell("d", "16", [0.85, 0.87, 0.86]),
             cell("a", "8", [0.6]), cell("d", "8", [0.69]),
             cell("a", "32", [0.80]), cell("d", "32", [0.88]), cell("a", "all", [0.91])]
    rows = bench.targets(cells)

    def row(start: str) -> dict:
        return next(r for r in rows if r["target"].startswith(start))

    assert len(rows) == 4
    assert row("k=16: best")["pass"] is True and row("k=16: best")["value"].startswith("0.8600 (d, 3 draws)")
    assert row("k=8: best")["pass"] is False and row("k=8: best")["value"] == "0.6900 (d, 1 draw)"
    assert row("k=32")["pass"] is True  # 0.88 against 0.91 - 0.03
    assert row("k=16: plain")["pass"] is False and row("k=16: plain")["value"] == "min 0.4900 over 3 draws"


def test_the_best_recipe_is_judged_among_those_run_over_the_most_draws(bench):
    cells = [cell("a", "8", [0.60, 0.62, 0.58]), cell("d", "8", [0.86, 0.88, 0.84]), cell("f", "8", [0.95])]
    (row,) = bench.targets(cells)
    assert row["value"] == "0.8600 (d, 3 draws)" and row["pass"] is True


def test_targets_need_their_cells(bench):
    assert bench.targets([cell("d", "32", [0.9])]) == []  # no full-data plain run to compare with


@pytest.mark.parametrize("ks", ["17", "0", "twelve"])
def test_a_k_the_pool_cannot_give_is_refused_before_anything_is_written(bench, small_data, tmp_path, monkeypatch,
                                                                        capsys, ks):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(sys, "argv", ["ner_scarce.py", "--data", str(small_data), "--ks", f"8,{ks}", "--report"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert f"--ks: {ks!r} is not a count of labelled sentences between 1 and the pool's 16" in capsys.readouterr().err
    assert list(results.iterdir()) == []


def test_draw_ids_plan_just_those_draws(bench, small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["ner_scarce.py", "--data", str(small_data), "--ks", "8,16", "--recipes", "a",
                                      "--draw-ids", "3,4", "--report"])
    bench.main()
    assert "4 runs planned, 0 already in" in capsys.readouterr().out
    assert json.loads((tmp_path / "ner_scarce.json").read_text())["setup"]["draws"].startswith("[3, 4] ")


@pytest.mark.parametrize("ids", ["3,3", "-1", "x", ""])
def test_bad_draw_ids_are_refused(bench, small_data, tmp_path, monkeypatch, capsys, ids):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(sys, "argv", ["ner_scarce.py", "--data", str(small_data), "--draw-ids", ids, "--report"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert "give distinct draw numbers >= 0" in capsys.readouterr().err
    assert list(results.iterdir()) == []
