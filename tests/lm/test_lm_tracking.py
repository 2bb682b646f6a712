"""``lm train`` with ``training.report_to``: the training loss and the held-out perplexity (adaptlab's token-weighted
one, computed in the Trainer's evaluation) reach the event files in ``<run>/tensorboard``, and with MLflow one
run, the last step's evaluation after training included."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import yaml
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install tensorboard; it is in the dev extra)")
def test_cpt_logs_loss_and_held_out_perplexity(tmp_path, run_cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = save_tiny_llama(tmp_path / "model")
    corpus = write_prepared_corpus(tmp_path / "corpus", model, general=False)
    config = train_config(model, corpus, tmp_path / "run", max_steps=4, eval_steps=2)
    config["training"].update(report_to="tensorboard", run_name="cpt-tracking")
    (tmp_path / "cpt.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli("lm", "train", tmp_path / "cpt.yaml")
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4] and all(math.isfinite(e.value) for e in loss)
    perplexity = {e.step: e.value for e in events.Scalars("eval/domain_perplexity")}
    assert set(perplexity) == {0, 2, 4} and all(math.isfinite(v) and v > 1 for v in perplexity.values())
    arguments = json.loads(events.Tensors("args/text_summary")[0].tensor_proto.string_val[0])
    assert arguments["run_name"] == "cpt-tracking" and arguments["max_steps"] == 4
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert perplexity[4] == pytest.approx(metrics["final_eval_domain_perplexity"], rel=1e-5)


def test_cpt_logs_to_one_mlflow_run_with_the_evaluation_after_training(tmp_path, run_cli, mlflow_runs):
    """5 steps, evaluated every 2: the step-5 evaluation runs after training, when MLflow's callback has ended its
    run; it still lands in that run."""
    model = save_tiny_llama(tmp_path / "model")
    corpus = write_prepared_corpus(tmp_path / "corpus", model, general=False)
    config = train_config(model, corpus, tmp_path / "run", max_steps=5, eval_steps=2)
    config["training"].update(report_to="mlflow")
    (tmp_path / "cpt.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli("lm", "train", tmp_path / "cpt.yaml")
    assert code == 0, err
    (run,) = mlflow_runs()
    assert run["name"] == "run" and run["status"] == "FINISHED"
    assert [step for step, _ in run["metrics"]["loss"]] == [1, 2, 3, 4, 5]
    perplexity = dict(run["metrics"]["eval_domain_perplexity"])
    assert set(perplexity) == {0, 2, 4, 5}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert perplexity[5] == pytest.approx(metrics["final_eval_domain_perplexity"], rel=1e-5)
