"""Two CPU processes under ``accelerate launch`` (DDP over gloo) train like one process with the same global batch.

The launch uses the shipped ``configs/accelerate/ddp.yaml``; without GPUs adaptlab asks accelerate for a CPU
process group (``processes_on_cpu``).

One process: batch 4. Two processes: batch 2 each. accelerate's seedable sampler gives both the same permutation,
and its batch sharding hands batches 2s and 2s + 1 of size 2 to the two ranks at step s: together, the single
process's batch s. The loss is token-weighted across devices, so per-step losses and held-out perplexities agree
up to the order of floating-point additions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus

from adaptlab import example_configs
from adaptlab.config import validate_config
from adaptlab.lm.checkpoints import MARKER_NAME, list_checkpoints
from adaptlab.recipes.lm_train import LMTrainConfig, train

DDP_CONFIG = example_configs.path("accelerate/ddp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_losses(metrics: dict) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in metrics["history"] if "loss" in row}


def test_two_cpu_processes_match_one(tmp_path):
    model = save_tiny_llama(tmp_path / "model")
    corpus = write_prepared_corpus(tmp_path / "corpus", model)
    settings = {"max_steps": 6, "save_steps": 3, "eval_steps": 3, "per_device_eval_batch_size": 3}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, single = train(validate_config(LMTrainConfig, train_config(model, corpus, tmp_path / "one", **settings)))
    finally:
        torch.set_num_threads(threads)

    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(train_config(model, corpus, tmp_path / "two", per_device_train_batch_size=2,
                                                       **settings)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--num_processes", "2", "--main_process_port", str(free_port()),
               str(Path(sys.executable).with_name("adaptlab")), "lm", "train", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())

    assert double["processes"] == 2 and double["global_batch_size"] == single["global_batch_size"] == 4
    assert step_losses(double) == pytest.approx(step_losses(single), rel=1e-4)
    for key in ("final_eval_domain_nll", "final_eval_general_nll"):
        assert double[key] == pytest.approx(single[key], rel=1e-4)
    last = list_checkpoints(tmp_path / "two" / "checkpoints")[-1]
    files = json.loads((last / MARKER_NAME).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(files)  # the marker waited for both ranks
