"""The offline demo end to end (about 2 minutes on 2 cores; `make test-slow`): the table shows the direction."""

from __future__ import annotations

import math

import pytest

from adaptlab.recipes.domain_instruct_demo import run_demo


@pytest.mark.slow
def test_demo_merged_model_is_near_domain_on_domain_text_and_near_instruct_on_the_probe(tmp_path):
    lines: list[str] = []
    run, metrics = run_demo(str(tmp_path / "demo"), say=lines.append)
    rows = {row["model"]: row for row in metrics["table"]}
    log_ppl = {name: math.log(row["ppl_domain"]) for name, row in rows.items()}
    # on domain text the merged model is closer to the domain model than to the base
    assert abs(log_ppl["merged"] - log_ppl["domain"]) < abs(log_ppl["merged"] - log_ppl["base"])
    # on the probe it is closer to the instruct model than to the domain model
    probe = {name: row["probe_both"] for name, row in rows.items()}
    assert abs(probe["merged"] - probe["instruct"]) < abs(probe["merged"] - probe["domain"])
    assert rows["domain"]["wildlife_quiz_acc"] > rows["base"]["wildlife_quiz_acc"]
    assert "What tiny models can and cannot show" in run.report.read_text()
    assert any("the recipe" in line for line in lines)
