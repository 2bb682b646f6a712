"""Training a causal LM on prepared rows: the one path of ``adaptlab lm train`` and ``adaptlab fractal sft``.

Read top to bottom:

1. :func:`training_run` opens the run directory through :func:`adaptlab.runs.open_run`: a new one, or the
   unfinished run to resume (:func:`adaptlab.lm.checkpoints.resume_point`). Under ``accelerate launch`` only the
   main process decides and creates; the others receive the same directory (or the same error).
2. :func:`fit` loads the model with float32 weights (``training.bf16`` adds mixed precision on top: master
   weights in bf16 would round small updates away; QLoRA loads it quantised), applies the ``strategy:`` block
   (``tuning.strategies.prepare`` with the causal-LM family and a ``TaskData`` naming the run directory and the
   tokenizer, then each strategy's ``train_dataset``: e.g. a distillation teacher's top-k, cached), and trains with
   :class:`~adaptlab.tuning.trainer.StrategyTrainer` (``causal=True``: the loss is ``sum w_t CE_t / sum w_t``
   over the accumulated batch when rows carry SFT ``weights``, else the model's token-averaged loss). The
   ``TrainingArguments`` come from :func:`adaptlab.tuning.settings.training_arguments`, with what causal
   training decides itself: evaluation and checkpoints every N steps (rotated by
   :class:`~adaptlab.lm.checkpoints.CheckpointMarker`, never by the Trainer), no KV cache in training.
3. The held-out splits are evaluated once more at the last step when it was not an evaluation step, and
   ``model/`` is written atomically: the model each strategy's ``finalize`` returns (LoRA merged unless
   ``strategy.peft.save: adapter``), with ``use_cache`` back on for inference, and the tokenizer.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.lm.checkpoints import CheckpointMarker, resume_point
from adaptlab.lm.packing import PackedCollator
from adaptlab.lm.train import (
    CausalTrainingConfig,
    TokenNLL,
    TrainingData,
    check_vocabulary,
    history_from_log,
    pad_token_id,
    processes_on_cpu,
    resolve_liger,
)
from adaptlab.runs import RunDir, get_logger, keep_on_failure, open_run
from adaptlab.tuning.families import CAUSAL_LM
from adaptlab.tuning.settings import resolve_bf16, training_arguments
from adaptlab.tuning.strategies import TaskData, prepare, train_dataset
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.strategies.peft_config import quantization_kwargs
from adaptlab.tuning.tracking import attach_trackers, resumed_mlflow_run
from adaptlab.tuning.trainer import StrategyTrainer, finalize, summaries


def check_settings(cfg: CausalTrainingConfig) -> None:
    """Settings that cannot work here fail before anything is written or loaded."""
    resolve_bf16(cfg.training.bf16)
    resolve_liger(cfg.training.use_liger_kernel)
    peft = getattr(cfg.strategy, "peft", None)
    if peft and peft.save == "merged" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise ConfigError("strategy.peft.save: merged needs the whole model in one process; under FSDP use "
                          "save: adapter and merge afterwards (peft's merge_and_unload)")


@contextmanager
def training_run(cfg: CausalTrainingConfig, state: Any) -> Iterator[tuple[RunDir, Path | None]]:
    """``(run directory, checkpoint to resume from or None)``, the same in every process (module docstring).

    A refusal (non-empty output, changed config) is sent to the other processes too, so every process stops
    with the same error instead of waiting for a main process that is gone. The main process must call
    ``run.finish`` inside the block (:func:`adaptlab.runs.open_run`).
    """
    from accelerate.utils import broadcast_object_list

    if state.num_processes > 1 and not cfg.output:
        raise ConfigError("set 'output' (--output DIR) when training with several processes, so that they all "
                          "find the same run directory")
    with ExitStack() as stack:
        opened: list[Any] = [None]
        if state.is_main_process:
            try:
                existing, checkpoint = resume_point(cfg.model_dump(mode="json"), cfg.output, cfg.resume)
                run = stack.enter_context(open_run(cfg.output, cfg.name, cfg, existing=existing))
                opened = [(run, checkpoint)]
            except AdaptlabError as exc:
                opened = [exc]
        if state.num_processes > 1:
            broadcast_object_list(opened)
        if isinstance(opened[0], AdaptlabError):
            raise opened[0]
        yield opened[0]


def causal_training_arguments(cfg: CausalTrainingConfig, checkpoints_dir: Path, has_eval: bool,
                              eval_on_start: bool) -> Any:
    """``TrainingArguments``: the settings, plus evaluation and marked checkpoints every N steps."""
    return training_arguments(
        cfg.training, checkpoints_dir,
        torch_compile=cfg.training.torch_compile,
        use_liger_kernel=resolve_liger(cfg.training.use_liger_kernel),
        eval_strategy="steps" if has_eval else "no",
        eval_on_start=has_eval and eval_on_start,
        eval_steps=cfg.eval_steps or cfg.save_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # CheckpointMarker rotates, after the new checkpoint is known to be complete
        logging_first_step=True,
        use_cache=False,  # explicit: with a KV cache transformers would not mask packed documents apart
        ddp_find_unused_parameters=False,
        use_cpu=processes_on_cpu(),
    )


def load_model(cfg: CausalTrainingConfig, model_dir: str, tokenizer: Any, tokenizer_source: str) -> Any:
    """The model to train, float32 (4/8-bit for QLoRA, ``strategy.peft.quantization``); its vocabulary checked."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=cfg.attn_implementation,
                                                 dtype=torch.float32,
                                                 **quantization_kwargs(getattr(cfg.strategy, "peft", None)))
    check_vocabulary(model, tokenizer, tokenizer_source)
    return model


def fit(cfg: CausalTrainingConfig, run: RunDir, checkpoint: Path | None, model_dir: str, tokenizer: Any,
        tokenizer_source: str, data: TrainingData, state: Any) -> dict[str, Any]:
    """Train on ``data``, evaluate its held-out splits, save ``run.model``; the numbers every run reports."""
    from transformers import set_seed

    set_seed(cfg.training.seed)
    task = TaskData(run.path, tokenizer, [], max_length=cfg.max_length, seed=cfg.training.seed,
                    report_to=cfg.training.report_to, run_name=cfg.training.run_name)
    model, strategies = prepare(cfg.strategy, CAUSAL_LM, load_model(cfg, model_dir, tokenizer, tokenizer_source),
                                task)
    train_rows = train_dataset(strategies, data.train, task)
    # evaluate at step 0 too (the baseline), but not again at the step a resumed run starts from
    args = causal_training_arguments(cfg, run.path / "checkpoints", bool(data.evals), eval_on_start=checkpoint is None)
    trainer = StrategyTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=data.evals or None,
        processing_class=tokenizer, data_collator=PackedCollator(pad_token_id(tokenizer)),
        compute_metrics=TokenNLL.compute_metrics if data.evals else None,
        preprocess_logits_for_metrics=TokenNLL.preprocess_logits_for_metrics if data.evals else None,
        callbacks=[CheckpointMarker(cfg.keep_checkpoints)], strategies=strategies, causal=True,
        stage=" ".join(["causal LM", getattr(cfg, "mode", "")]).rstrip(),  # lm train: "causal LM cpt" / "... sft"
    )
    attach_trackers(trainer, run.path)
    keep_on_failure(run, f"run the same command with --output {run.path} resume=auto to continue from its newest "
                         "complete checkpoint (or from step 0 if none was saved)")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    if data.evals and trainer.state.global_step % args.eval_steps != 0:
        with resumed_mlflow_run(run.path):  # joins the training's MLflow run
            trainer.evaluate()  # the last step's perplexity, when it was not an evaluation step
    save_final_model(trainer, tokenizer, strategies, run.model)
    history = history_from_log(trainer.state.log_history)
    return {
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps
        * state.num_processes,
        "processes": state.num_processes, "bf16": args.bf16, "liger": args.use_liger_kernel,
        "torch_compile": args.torch_compile,
        "strategies": summaries(strategies), "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": round(seconds, 2), **final_values(history), "history": history,
    }


def save_final_model(trainer: Any, tokenizer: Any, strategies: list[Strategy], target: Path) -> None:
    """Write the model to save (:func:`adaptlab.tuning.trainer.finalize`; LoRA merged unless
    ``strategy.peft.save: adapter``) and the tokenizer to ``target`` atomically: into ``model.partial``, renamed
    when complete.

    ``use_cache`` is switched back on for inference (training runs without a KV cache: with one, packed
    documents would attend to each other). The trained model itself is saved by ``trainer.save_model``, which
    is collective under FSDP / DeepSpeed (a PEFT model saves its adapter); a model a strategy made (LoRA
    merged) is saved by the main process.
    """
    partial = target.with_name(target.name + ".partial")
    main = trainer.is_world_process_zero()
    if main and partial.exists():
        shutil.rmtree(partial)  # left by an interrupted earlier save of this same run
    trainer.accelerator.wait_for_everyone()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    final = finalize(strategies, trained)
    final.config.use_cache = True
    if final is trained:
        trainer.save_model(str(partial))
    elif main:
        final.save_pretrained(partial)
    if main:
        tokenizer.save_pretrained(partial)
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml of the run says it all
        os.replace(partial, target)
    trainer.accelerator.wait_for_everyone()
    get_logger().info("saved the model to %s", target)


def final_values(history: list[dict[str, Any]]) -> dict[str, float]:
    """``final_train_loss`` (the last logged window) and the last ``final_eval_<split>_{perplexity,nll}``."""
    final: dict[str, float] = {}
    for row in history:
        if "loss" in row:
            final["final_train_loss"] = row["loss"]
        for key, value in row.items():
            if key.startswith("eval_") and key.endswith(("_perplexity", "_nll")):
                final[f"final_{key}"] = value
    return final
