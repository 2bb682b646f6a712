"""Masked-LM steps of ``strategy.domain``: the head on the masked positions only against full logits, one run.

Arms, the same model, texts, masks, seed and optimiser:

* **full logits**: the model's own masked-LM loss, its head scoring every position (what a plain transformers
  ``Trainer`` or ``run_mlm.py`` computes), through :class:`~adaptlab.tuning.trainer.StrategyTrainer`;
* **masked only** (ours): :class:`~adaptlab.tuning.masked_lm_loss.MaskedLMTrainer`, the head scoring only the masked
  positions.

Model: the packaged all-MiniLM-L6-v2 with a new masked-LM head (as in a real TAPT run on it). Texts: the
biospecies sentences of the shared data when present (the texts ``ner_scarce.py`` recipe c pretrains on), else
``benchmarks/texts/everyday_natural.txt``, or ``--texts FILE`` (one text a line, or records: their texts, as
``strategy.domain.texts`` reads it). ``--steps`` optimiser steps (default 30) at batch 32, whole-word masking of
15 % of the words, lr 1e-4; seconds per step are the median over the steps after the first ``--warmup``. The
per-step losses of the two arms are compared: with the same masks they differ only by float rounding. Writes
``benchmarks/results/tapt_speed.json``.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/tapt_speed.py [--steps 30] [--texts FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from adaptlab.data.texts import read_texts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tapt_speed.json"
BIOSPECIES = ROOT.parent / "shared" / "data" / "biospecies" / "NER_Biospecies_data.txt"
EVERYDAY = ROOT / "benchmarks" / "texts" / "everyday_natural.txt"
ARMS = ("full logits", "masked only")


def default_texts() -> tuple[list[str], str]:
    if BIOSPECIES.is_file():
        import ner_biospecies

        records, _, _ = ner_biospecies.load_variant(normalise=True)
        return sorted({r.text for r in records}), f"biospecies ({BIOSPECIES})"
    return read_texts(str(EVERYDAY), None), str(EVERYDAY)


def run_arm(arm: str, texts: list[str], steps: int, output: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForMaskedLM, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging

    from adaptlab.ie.models import resolve_student
    from adaptlab.tuning.masked_lm_loss import MaskedLMTrainer
    from adaptlab.tuning.masking import WholeWordMaskCollator, masking_rows
    from adaptlab.tuning.settings import TrainerSettings, training_arguments
    from adaptlab.tuning.trainer import StrategyTrainer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    hf_logging.set_verbosity_error()  # the load report of the new head, on every arm
    hf_logging.disable_progress_bar()
    encoder = resolve_student("minilm")
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(encoder)
    rows = masking_rows(texts, tokenizer, 128, whole_word=True)
    settings = TrainerSettings(learning_rate=1e-4, max_steps=steps, per_device_train_batch_size=32, seed=0,
                               logging_steps=1, report_to=[], progress=False)
    arguments = training_arguments(settings, output, save_strategy="no", eval_strategy="no",
                                   remove_unused_columns=False)
    clock = StepClock()
    trainer_class = MaskedLMTrainer if arm == "masked only" else StrategyTrainer
    trainer = trainer_class(model=model, args=arguments, train_dataset=Dataset.from_dict(rows),
                            data_collator=WholeWordMaskCollator(tokenizer, 0.15), processing_class=tokenizer,
                            callbacks=[clock])
    started = time.perf_counter()
    trainer.train()
    step_seconds = [b - a for a, b in zip([started, *clock.ends], clock.ends, strict=False)]
    return {"losses": [e["loss"] for e in trainer.state.log_history if "loss" in e], "step_seconds": step_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--texts", type=Path,
                        help="one text a line, or records (default: biospecies or the everyday texts)")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must be larger than --warmup")
    if args.texts is not None and not args.texts.is_file():
        parser.error(f"--texts: no file {args.texts}")
    texts, source = (read_texts(str(args.texts), None), str(args.texts)) if args.texts else default_texts()
    import torch
    from rich.console import Console
    from rich.table import Table

    arms = {}
    with tempfile.TemporaryDirectory(prefix="tapt-speed-") as folder:
        for arm in ARMS:
            arms[arm] = run_arm(arm, texts, args.steps, Path(folder) / arm.replace(" ", "-"))
    for result in arms.values():
        result["median_step_seconds"] = statistics.median(result["step_seconds"][args.warmup:])
    full, ours = arms["full logits"], arms["masked only"]
    speedup = full["median_step_seconds"] / ours["median_step_seconds"]
    loss_gap = max(abs(a - b) for a, b in zip(full["losses"], ours["losses"], strict=True))
    table = Table(title=f"masked-LM steps, all-MiniLM-L6-v2, batch 32, {len(texts)} texts, {torch.get_num_threads()} "
                        "torch thread(s)")
    for column in ("arm", "median s/step", "first loss", "last loss"):
        table.add_column(column)
    for arm, result in arms.items():
        table.add_row(arm, f"{result['median_step_seconds']:.3f}", f"{result['losses'][0]:.4f}",
                      f"{result['losses'][-1]:.4f}")
    console = Console()
    console.print(table)
    console.print(f"speed-up {speedup:.2f}x; largest per-step loss difference {loss_gap:.2e}")
    RESULTS.write_text(json.dumps({
        "setup": {"model": "all-MiniLM-L6-v2 (packaged), new masked-LM head", "texts": source,
                  "text_count": len(texts), "steps": args.steps, "warmup_steps_left_out": args.warmup,
                  "batch": 32, "mlm_probability": 0.15, "torch_threads": torch.get_num_threads()},
        "arms": arms, "speedup": speedup, "max_loss_difference": loss_gap}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
