"""``adaptlab lm train`` with ``strategy.distill``: a tiny Llama student, a larger tiny Llama teacher saved in tmp
(with 8 padding rows beyond the shared tokenizer), through the CLI, and the refusals with exit 2."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from distill_helpers import other_tokenizer, save_teacher
from train_helpers import save_tiny_llama, tiny_tokenizer, train_config, write_prepared_corpus, write_sft_jsonl

from adaptlab import example_configs
from adaptlab.config import load_config
from adaptlab.recipes.lm_train import LMTrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-distill")
    student = save_tiny_llama(root / "student")
    return {"root": root, "student": student,
            "teacher": save_teacher(root / "teacher", rows=len(tiny_tokenizer()) + 8),
            "sft": write_sft_jsonl(root / "sft.jsonl", 24), "held_out": write_sft_jsonl(root / "held.jsonl", 6, 1),
            "corpus": write_prepared_corpus(root / "corpus", student, train_docs=20)}


def write_config(assets, name: str, distill: dict, data: str = "sft", **overrides) -> str:
    config = train_config(assets["student"], assets[data], assets["root"] / name, max_steps=4, eval_steps=4,
                          **overrides)
    config["strategy"] = {"distill": {"teacher": str(assets["teacher"]), **distill}}
    path = assets["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_sft_distils_from_a_cached_top_k_with_on_policy_batches(assets, run_cli):
    distill = {"loss": "jsd", "beta": 0.5, "top_k": 5, "on_policy_fraction": 0.5, "max_new_tokens": 4}
    config = write_config(assets, "sft", distill, mode="sft", eval_data=str(assets["held_out"]), max_length=64)
    code, _, err = run_cli("lm", "train", config)
    assert code == 0, err
    out = assets["root"] / "sft"
    metrics = json.loads((out / "metrics.json").read_text())
    done = metrics["strategies"]["distill"]
    assert done["teacher"] == str(assets["teacher"]) and (done["loss"], done["beta"], done["top_k"]) == ("jsd", 0.5, 5)
    assert done["cached_teacher"]["rows"] == 24 and done["cached_teacher"]["k"] == 5
    assert (done["compared_rows"], done["trimmed_rows"]) == (len(tiny_tokenizer()), 8)
    assert done["training_batches"] == 4 and 1 <= done["on_policy_batches"] <= 3
    assert "the rows beyond are padding, so the logits are compared over the first 40" in (out / "log.txt").read_text()
    losses = [row["loss"] for row in metrics["history"] if "loss" in row]
    assert len(losses) == 4 and all(math.isfinite(loss) and loss >= 0 for loss in losses)
    assert math.isfinite(metrics["final_eval_held_out_perplexity"])
    assert list((out / "distill").glob("teacher_top_5.rank0.arrow"))
    assert (out / "model" / "config.json").is_file()


def test_cpt_distils_packed_blocks_from_the_live_teacher(assets, run_cli):
    config = write_config(assets, "cpt", {"loss": "reverse_kl", "alpha": 0.8}, data="corpus",
                          gradient_accumulation_steps=2, per_device_train_batch_size=2)
    code, _, err = run_cli("lm", "train", config)
    assert code == 0, err
    done = json.loads((assets["root"] / "cpt" / "metrics.json").read_text())["strategies"]["distill"]
    assert done["cached_teacher"] is None and done["on_policy_batches"] == 0 and done["training_batches"] == 8


def test_a_teacher_with_another_tokenizer_exits_2_with_the_explanation(assets, run_cli):
    teacher = save_teacher(assets["root"] / "other-teacher", tokenizer=other_tokenizer("swapped"))
    config = write_config(assets, "refused", {}, mode="sft")
    code, _, err = run_cli("lm", "train", config, f"strategy.distill.teacher={teacher}")
    assert code == 2
    assert f"strategy.distill: the teacher {teacher} does not use the student's tokenizer" in err
    assert "2 with another id (e.g. 'bond': 11 vs 12, 'yield': 12 vs 11)" in err
    assert not (assets["root"] / "refused").exists()  # nothing half-written


def test_a_missing_teacher_exits_2_naming_the_key(assets, run_cli):
    missing = assets["root"] / "no-teacher"
    config = write_config(assets, "missing", {}, mode="sft")
    code, _, err = run_cli("lm", "train", config, f"strategy.distill.teacher={missing}")
    assert code == 2 and f"strategy.distill.teacher: {missing} does not exist" in err
    assert not (assets["root"] / "missing").exists()


def test_the_example_config_loads():
    cfg = load_config(LMTrainConfig, example_configs.path("lm_distill"))
    distill = cfg.strategy.distill
    assert (cfg.mode, distill.loss, distill.top_k, distill.cache_teacher) == ("sft", "forward_kl", 20, True)
    assert cfg.training.use_liger_kernel is False
