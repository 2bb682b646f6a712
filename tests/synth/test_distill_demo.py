"""The offline distillation demo: its shipped cassette and review belong together, and it runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adaptlab import example_configs
from adaptlab.data.records import read_records
from adaptlab.recipes import distill, synth
from adaptlab.synth.schema import Schema, preset_schema

ROOT = Path(__file__).resolve().parents[2]


def test_demo_schema_matches_the_example_config():
    """The demo's schema is the biospecies preset, the same as the shipped generation config's."""
    example = Schema.model_validate(yaml.safe_load((example_configs.path("synth_biospecies")).read_text())["schema"])
    assert distill.demo_schema() == example == preset_schema("biospecies")


def test_shipped_cassette_replays_and_the_shipped_review_belongs_to_it(tmp_path):
    resources = distill.demo_resources()
    run, metrics = synth.generate(distill.demo_synth_config(resources / "cassette.jsonl", str(tmp_path / "gen")))
    assert metrics["subjects"]["accepted"] == 30
    for stage in synth.STAGES:
        assert metrics[stage]["rejected"] >= 1, f"the demo shows a rejected {stage[:-1]}"
    generated = {r.meta["id"] for r in read_records(run.path / "records.jsonl")}
    reviewed = json.loads((resources / "reviewed.json").read_text())
    assert {task["data"]["id"] for task in reviewed} == generated


@pytest.mark.slow
def test_distill_demo_end_to_end(tmp_path, run_cli):
    code, out, err = run_cli("distill", "demo", "--output", tmp_path / "demo", "--epochs", "4")
    assert code == 0, err
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["review"]["counts"]["edited"] >= 5
    assert metrics["student"]["test"]["token"]["macro"]["f1"] > 0.5
    assert {"synth", "review", "student", "report.html"} <= {p.name for p in (tmp_path / "demo").iterdir()}
