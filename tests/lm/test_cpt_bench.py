"""benchmarks/cpt_throughput.py: the MFU arithmetic on the issue's own H100 numbers, and its packed-corpus layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cpt_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("cpt_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mfu_of_qwen25_05b_matches_the_issue_numbers(bench):
    from transformers import Qwen2Config

    n = bench.parameter_count(Qwen2Config(**bench.QWEN25_05B))
    assert n == 494_032_768  # Qwen2.5-0.5B, the tied embedding (151936 x 896) counted once
    flops = bench.flops_per_token(n, layers=24, hidden=896, seq=2048)
    assert flops == 6 * 494_032_768 + 12 * 24 * 896 * 2048 == 3_492_678_912
    peak = bench.peak_tflops_for("NVIDIA H100 80GB HBM3")
    assert peak == 989.0
    # the issue's plain Trainer measurements: 62.7k tokens/s is 22% MFU, 92.0k (torch.compile) 32.5%
    assert bench.model_flops_utilization(62_700, flops, peak) == pytest.approx(0.2214, abs=5e-4)
    assert bench.model_flops_utilization(92_000, flops, peak) == pytest.approx(0.3249, abs=5e-4)
    # 50% MFU needs about 141.6k tokens/s
    assert 0.5 * peak * 1e12 / flops == pytest.approx(141_580, rel=1e-3)


def test_peak_by_gpu_name(bench):
    assert bench.peak_tflops_for("NVIDIA H200") == 989.0
    assert bench.peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops_for("NVIDIA L4") is None  # unknown: the script asks for --peak-tflops


def test_prepared_corpus_is_full_packed_blocks_the_recipe_can_load(bench, tmp_path):
    from adaptlab.lm.packing import IGNORE_INDEX
    from adaptlab.lm.prepared import load_prepared

    counts = bench.write_prepared_corpus(tmp_path / "corpus", tmp_path / "tok", rows=6, seq=64, vocab=500, seed=0)
    corpus = load_prepared(tmp_path / "corpus")
    assert counts["blocks"] == len(corpus.train) == 6 and len(corpus.eval_domain) == 0
    assert counts["packing"]["split_documents"] > 0  # documents continue across blocks, none is cut
    for row in corpus.train:
        assert len(row["input_ids"]) == 64
        starts = [i for i, position in enumerate(row["position_ids"]) if position == 0]
        assert starts[0] == 0 and all(row["labels"][i] == IGNORE_INDEX for i in starts)
        assert all(2 <= t < 500 or t == bench.EOS_ID for t in row["input_ids"])


def test_run_specs_parse_and_reject_typos(bench):
    assert bench.parse_run("plain torch_compile=true per_device_train_batch_size=16") == (
        "plain", {"torch_compile": True, "per_device_train_batch_size": 16})
    assert bench.parse_run("ours training.use_liger_kernel=false attn_implementation=sdpa") == (
        "ours", {"training.use_liger_kernel": False, "attn_implementation": "sdpa"})
    with pytest.raises(ValueError, match="expected 'ours' or 'plain'"):
        bench.parse_run("mine torch_compile=true")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        bench.parse_run("ours compile")
