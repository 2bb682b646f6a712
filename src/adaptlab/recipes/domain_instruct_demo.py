"""``adaptlab domain-instruct demo``: the whole recipe offline, on tiny models trained from scratch.

A real run starts from a pretrained base model and its instruct version. The demo has neither, so
it makes both from the text shipped in ``resources/lm_demo`` (built by ``tools/build_lm_demo.py``):

1. a byte-level BPE tokenizer with a chat template, trained on the shipped text;
2. **base**: a tiny Llama-shaped model (random init) pretrained on general text (the first part of
   ``general.txt``);
3. **instruct**: the base after chat SFT on ``instructions.jsonl`` (general topics only);
4. the corpus for continual pretraining: ``domain.txt`` (wildlife conservation) with replay of the
   rest of ``general.txt``, whose held-out part neither the base nor the instruct model has seen;
5. the recipe itself (:func:`adaptlab.recipes.domain_instruct.run`): continual pretraining of the
   base, the chat-vector merge, and the evaluation of all four models on held-out domain and
   general perplexity, a domain cloze quiz and the instruction-following probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import Field

from adaptlab.config import StrictModel, validate_config
from adaptlab.lm.prepared import write_documents
from adaptlab.lm.tiny import save_random_causal_lm, train_tokenizer
from adaptlab.metrics.lm import read_text_file
from adaptlab.recipes import domain_instruct, lm_prepare, lm_train
from adaptlab.report.html import Image, KeyValues, Paragraph, Section
from adaptlab.report.plots import loss_curve_png
from adaptlab.runs import RunDir, get_logger, open_run

BASE_DOCUMENTS = 800  # paragraphs of general.txt for base pretraining; the rest is replay and held-out text
CAVEATS = (
    "What tiny models can and cannot show. These models have about 0.2M parameters and were trained for "
    "a few minutes on templated text, so the numbers show the direction of each effect, not its size on "
    "real models. They can show that continual pretraining lowers domain perplexity and that the chat "
    "vector carries the instruct model's habit of answering in the chat format and stopping at EOS into "
    "the domain model without any instruction data. They cannot show fluency, knowledge, reasoning or "
    "benchmark gains: the quiz is a cloze test on facts repeated in the domain text, the probe only checks "
    "format and stopping, and on models this small merging can cost more perplexity than on billion-"
    "parameter models whose fine-tuning deltas are small relative to their weights."
)
TRAINING = {"learning_rate": 3e-3, "warmup_steps": 20, "per_device_train_batch_size": 16, "logging_steps": 10,
            "weight_decay": 0.0, "progress": False}
CHECKPOINTS = {"save_steps": 100, "keep_checkpoints": 1}


class DemoConfig(StrictModel):
    """What ``adaptlab domain-instruct demo`` was run with (its run's config.yaml)."""

    output: str | None = None
    cpt_steps: int = Field(120, ge=1, description="continual-pretraining steps of the recipe stage")


def demo_resource(name: str) -> Path:
    """A file of the shipped ``resources/lm_demo`` (domain and general text, instructions)."""
    return Path(str(files("adaptlab") / "resources" / "lm_demo" / name))


def build_tokenizer(folder: Path, general: list[str]):
    texts = general + read_text_file(demo_resource("domain.txt"))
    texts += demo_resource("instructions.jsonl").read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer(texts)
    tokenizer.save_pretrained(folder)
    return tokenizer


def split_general(work: Path, documents: list[str]) -> tuple[Path, Path]:
    """general.txt -> the base model's pretraining text and the text the continual pretraining replays."""
    base, rest = work / "general_base.txt", work / "general_rest.txt"
    write_documents(base, documents[:BASE_DOCUMENTS])
    write_documents(rest, documents[BASE_DOCUMENTS:])
    return base, rest


def prepare(tokenizer: Path, sources: list[dict], output: Path, **settings: Any) -> Path:
    cfg = validate_config(lm_prepare.PrepareConfig, {
        "name": output.name, "tokenizer": str(tokenizer), "sources": sources, "block_size": 128,
        "output": str(output), "progress": False, "tokenization_cache": False, **settings})
    run, _ = lm_prepare.prepare(cfg)
    return run.path


def train(model: Path, data: Path, output: Path, mode: str, max_length: int | None = None,
          **training: Any) -> tuple[Path, dict]:
    sft = {"max_length": max_length} if max_length else {}
    cfg = validate_config(lm_train.LMTrainConfig, {
        "name": output.name, "mode": mode, "model": str(model), "data": str(data), "output": str(output),
        **CHECKPOINTS, **sft, "training": {**TRAINING, **training}})
    run, metrics = lm_train.train(cfg)
    return run.model, metrics


def run_demo(output: str | None = None, cpt_steps: int = 120,
             say: Callable[[str], None] = lambda message: None) -> tuple[RunDir, dict[str, Any]]:
    """Run the demo; ``say`` receives one line per stage (the CLI prints them)."""
    with open_run(output, "domain-instruct-demo", DemoConfig(output=output, cpt_steps=cpt_steps)) as run:
        work = run.path / "work"
        work.mkdir()
        started = time.perf_counter()

        def stage(message: str) -> None:
            get_logger().info(message)
            say(f"[{time.perf_counter() - started:6.0f} s] {message}")

        stage("tokenizer and a random tiny Llama")
        general = read_text_file(demo_resource("general.txt"))
        tokenizer = build_tokenizer(work / "tokenizer", general)
        init = save_random_causal_lm(tokenizer, work / "init", hidden=64, layers=2, heads=4, max_positions=256)
        general_base, general_rest = split_general(work, general)
        stage("base: pretraining on general text")
        base_corpus = prepare(init, [{"name": "general", "path": str(general_base), "role": "domain"}],
                              work / "corpus-base", eval_documents=20)
        base, base_metrics = train(init, base_corpus, work / "base", "cpt", max_steps=300)
        stage("instruct: chat SFT of the base")
        instruct, instruct_metrics = train(base, demo_resource("instructions.jsonl"), work / "instruct", "sft",
                                           max_length=128, max_steps=60, learning_rate=5e-4)
        stage("domain corpus with general replay")
        corpus = prepare(base, [{"name": "wildlife", "path": str(demo_resource("domain.txt")), "role": "domain"},
                                {"name": "general", "path": str(general_rest), "role": "general"}],
                         work / "corpus-domain", eval_documents=20, replay_ratio=0.1)
        recipe_cfg = validate_config(domain_instruct.DomainInstructConfig, {
            "name": "domain-instruct", "base": str(base), "instruct": str(instruct), "corpus": str(corpus),
            "output": str(run.path / "recipe"),
            "train": {**CHECKPOINTS, "training": {**TRAINING, "learning_rate": 1e-3, "warmup_steps": 10,
                                                  "max_steps": cpt_steps}},
            "evaluate": {"mc": {"tasks": {"wildlife_quiz": str(demo_resource("domain_quiz.jsonl"))}},
                         "probe": {"prompts": str(demo_resource("probe.jsonl")), "max_new_tokens": 40},
                         "perplexity": {"max_length": 128}, "progress": False},
        })
        stage("the recipe: continual pretraining, chat-vector merge, evaluation of the four models")
        _, metrics = domain_instruct.run(recipe_cfg)
        metrics = {**metrics, "seconds": round(time.perf_counter() - started, 1),
                   "base_training": {k: v for k, v in base_metrics.items() if k.startswith("final_")},
                   "instruct_training": {k: v for k, v in instruct_metrics.items() if k.startswith("final_")}}
        run.finish(metrics, "Domain instruct demo (tiny models, offline)", [
            Section("What this demo is", [Paragraph(__doc__.split("\n\n", 1)[1].replace("\n", " ")),
                                          Paragraph(CAVEATS)]),
            *domain_instruct.report_sections(metrics),
            Section("Making the base and instruct models", [
                Image(loss_curve_png(base_metrics["history"], "base pretraining"), alt="base pretraining"),
                Image(loss_curve_png(instruct_metrics["history"], "instruct SFT"), alt="instruct SFT"),
                KeyValues({"base": metrics["base_training"], "instruct": metrics["instruct_training"],
                           "total seconds": metrics["seconds"]}),
            ]),
        ])
    return run, metrics
