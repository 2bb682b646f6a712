"""``adaptlab merge CONFIG`` and ``adaptlab merge chat-vector``: outputs, summaries and error exits."""

from __future__ import annotations

import json

import torch
import yaml


def test_merge_config_runs_by_default(model_family, tmp_path, run_cli, state):
    family = model_family("llama")
    config = tmp_path / "ties.yaml"
    config.write_text(yaml.safe_dump({
        "method": "ties", "base_model": str(family["base"]), "progress": False,
        "models": [{"model": str(family["domain"]), "density": 0.5}, {"model": str(family["instruct"]),
                                                                    "density": 0.5}],
    }))
    code, out, err = run_cli("merge", config, "--output", tmp_path / "out", "parameters.lambda=0.5")
    assert code == 0, err
    assert "merged model:" in out and "report:" in out
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["config"]["parameters"] == {"lambda": 0.5} and report["config"]["method"] == "ties"
    # the merged model directory is the run directory too: the resolved config, the report as metrics, the log
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["parameters"] == {"lambda": 0.5}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == report
    assert "ties" in (tmp_path / "out" / "report.html").read_text()
    assert "merged 21 tensors (ties)" in (tmp_path / "out" / "log.txt").read_text()


def test_chat_vector_command(model_family, tmp_path, run_cli, state):
    family = model_family("llama")
    code, out, err = run_cli("merge", "chat-vector", "--base", family["base"], "--instruct", family["instruct"],
                             "--domain", family["domain"], "--output", tmp_path / "cv", "--scale", "0.5")
    assert code == 0, err
    base, instruct, domain, merged = (state(p) for p in (family["base"], family["instruct"], family["domain"],
                                                          tmp_path / "cv"))
    name = "model.layers.0.self_attn.v_proj.weight"
    torch.testing.assert_close(merged[name], domain[name] + 0.5 * (instruct[name] - base[name]), rtol=0, atol=1e-6)


def test_bad_configs_exit_2_with_the_key(model_family, tmp_path, run_cli):
    family = model_family("llama")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"method": "average", "models": [{"model": str(family["domain"])}],
                                      "output": str(tmp_path / "o")}))
    code, _, err = run_cli("merge", config)
    assert code == 2 and "average" in err and "task_arithmetic" in err
    code, _, err = run_cli("merge", config, "method=linear", "--dtype", "fp8")
    assert code == 2 and "dtype" in err
    code, _, err = run_cli("merge", config, "method=ties")
    assert code == 2 and "base_model" in err
    code, _, err = run_cli("merge", config, "method=linear", "parameters.lamda=2")
    assert code == 2 and "lamda" in err
    assert not (tmp_path / "o").exists()


def test_merge_search_command_ranks_the_grid(model_family, tmp_path, run_cli):
    family = model_family("llama")
    text = tmp_path / "domain.txt"
    text.write_text("Olms live in caves.\n\nAxolotls eat worms and small fish in canals.\n")
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({
        "merge": {"method": "task_arithmetic", "base_model": str(family["base"]),
                  "models": [{"model": str(family["domain"])}, {"model": str(family["instruct"])}]},
        "target": "weight", "vary": str(family["instruct"]), "grid": [0.0, 1.0], "domain_text": str(text),
        "max_length": 32, "progress": False, "output": str(tmp_path / "search"),
    }))
    code, out, err = run_cli("merge", "search", config)
    assert code == 0, err
    assert sum(line.startswith("weight ") for line in out.splitlines()) == 2 and "<- best" in out
    result = json.loads((tmp_path / "search" / "search.json").read_text())
    assert [row["value"] for row in result["rows"]] == [0.0, 1.0]
    assert (tmp_path / "search" / "best" / "model.safetensors").is_file()
