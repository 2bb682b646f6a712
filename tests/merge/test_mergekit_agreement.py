"""Cross-check whole merges against mergekit (a test-only dependency) with both in float32."""

from __future__ import annotations

import pytest
import torch

from adaptlab.merge.config import MergeConfig
from adaptlab.merge.engine import merge_models

mergekit_config = pytest.importorskip("mergekit.config")
mergekit_merge = pytest.importorskip("mergekit.merge")

CASES = {
    "linear": ({"normalize": True}, [{"weight": 0.3}, {"weight": 0.9}], False),
    "task_arithmetic": ({"lambda": 0.8}, [{"weight": 1.0}, {"weight": 0.5}], True),
    "ties": ({"normalize": True}, [{"weight": 1.0, "density": 0.5}, {"weight": 0.7, "density": 0.3}], True),
    "slerp": ({"t": 0.3}, [{}], True),
}


def run_mergekit(method: str, params: dict, per_model: list[dict], family, with_base: bool, out):
    models = [family["domain"], family["instruct"]][: len(per_model)]
    config = {
        "merge_method": method, "dtype": "float32", "parameters": params,
        "models": [{"model": str(path), "parameters": p} for path, p in zip(models, per_model)],
    }
    if with_base:
        config["base_model"] = str(family["base"])
        if method == "slerp":
            config["models"].append({"model": str(family["base"])})
    options = mergekit_merge.MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True)
    mergekit_merge.run_merge(mergekit_config.MergeConfiguration.model_validate(config), str(out), options)


@pytest.mark.parametrize("method", sorted(CASES))
def test_merge_agrees_with_mergekit(method, model_family, tmp_path, state):
    family = model_family("llama", sharded=True)
    params, per_model, with_base = CASES[method]
    run_mergekit(method, params, per_model, family, with_base, tmp_path / "mergekit")
    models = [family["domain"], family["instruct"]][: len(per_model)]
    ours = MergeConfig(
        method=method, base_model=str(family["base"]) if with_base else None, parameters=params,
        models=[{"model": str(path), **p} for path, p in zip(models, per_model)],
        dtype="float32", output=str(tmp_path / "ours"), progress=False,
    )
    merge_models(ours)
    theirs, mine = state(tmp_path / "mergekit"), state(tmp_path / "ours")
    assert set(theirs) == set(mine)
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)
