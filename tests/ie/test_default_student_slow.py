"""The real default student on the shipped demo set (minutes on CPU): `make test-slow`."""

import pytest


@pytest.mark.slow
def test_demo_recipe_learns_the_demo_set(tmp_path):
    from adaptlab.recipes import demo

    path, metrics = demo.run(str(tmp_path / "demo"))
    assert (path / "report.html").exists()
    assert metrics["test"]["strict"]["micro"]["f1"] > 0.75
    assert metrics["test"]["token"]["macro"]["f1"] > 0.9
    assert metrics["test_triples"]["micro"]["f1"] > 0.6
