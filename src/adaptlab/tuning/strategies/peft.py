"""``strategy.peft``: train a PEFT adapter (LoRA and its variants, IA3, prompt or prefix tuning) instead of the model.

The config (:class:`~adaptlab.tuning.strategies.peft_config.PeftTuningConfig`) uses PEFT's names. The hooks:

* ``check`` refuses before step 0 what cannot work: prompt tuning on token classification (the virtual tokens
  shift the outputs off the word labels), prefix tuning on a model whose forward takes no ``past_key_values``,
  ``target_modules`` / ``modules_to_save`` that match no module, QLoRA without bitsandbytes, CUDA or a quantised
  model, ``save: merged`` for prompt methods (virtual tokens cannot be folded into weights) or a quantised base,
  PiSSA/OLoRA with ``save: adapter`` (they rewrite the base weights, ``W_res = W - scale B0 A0``, so their adapter
  only fits that rewritten base).
* ``prepare_model`` wraps the model with ``peft.get_peft_model``. **modules_to_save** (trained in full, saved
  with the adapter) = the encoder's head (``Family.head_module_names``: a classifier starts random and must be
  trained and saved, PEFT issues #310, #577, #876, #1070) + the embeddings when ``train_embeddings`` says so
  (input embeddings, and the untied output embeddings of a causal LM; tied ones stay tied via LoRA's
  ``ensure_weight_tying``) + the user's ``modules_to_save``.
* ``lr_scale``: LoRA+ (Hayou et al. 2024): every ``lora_B`` parameter gets ``learning_rate * loraplus_lr_ratio``.
* ``finalize``: ``merge_and_unload()`` for ``save: merged`` (a plain transformers model), the ``PeftModel`` for
  ``save: adapter`` (its ``save_pretrained`` writes ``adapter_config.json``, the adapter and modules_to_save;
  :func:`adaptlab.models.adapters.load_pretrained` loads it back).
* ``summary``: trainable and total parameters, their share, the method, and ``adapter_unchanged``: true when the
  tensors that make the adapter act (LoRA ``B`` and DoRA magnitudes, IA3 vectors, the prompt encoder) still equal
  their initial values, i.e. training changed nothing (LoRA starts with ``B = 0``); a warning is logged too.

**Added tokens.** ``train_embeddings: auto`` trains the embeddings when the recipe enlarged them with
:func:`resize_token_embeddings` (this module), which records the checkpoint's row count on the model object
(``adaptlab_base_vocab_rows``); comparing with ``config.vocab_size`` cannot tell, since resizing updates it and
checkpoints often have more rows than their tokenizer has tokens.
"""

from __future__ import annotations

import inspect
from typing import Any

from adaptlab.errors import StrategyError
from adaptlab.runs import get_logger
from adaptlab.tuning.families import Family, unwrap
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.strategies.peft_config import (
    PROMPT_METHODS,
    PeftTuningConfig,
    check_quantization_backend,
    peft_config,
    quantization_kwargs,
)

__all__ = ["PeftStrategy", "PeftTuningConfig", "quantization_kwargs", "resize_token_embeddings"]

BASE_VOCAB_ROWS = "adaptlab_base_vocab_rows"
ADAPTER_TENSORS = ("lora_B", "lora_embedding_B", "lora_magnitude_vector", "ia3_l", "prompt_encoder")


def resize_token_embeddings(model: Any, size: int, **kwargs: Any) -> Any:
    """``model.resize_token_embeddings(size, **kwargs)``, remembering the rows the checkpoint had, so that
    ``train_embeddings: auto`` trains (and saves) the embeddings of the added tokens."""
    if not hasattr(model, BASE_VOCAB_ROWS):
        setattr(model, BASE_VOCAB_ROWS, model.get_input_embeddings().num_embeddings)
    model.resize_token_embeddings(size, **kwargs)
    return model


def embeddings_resized(model: Any) -> bool:
    inner = unwrap(model)
    base_rows = getattr(inner, BASE_VOCAB_ROWS, None)
    return base_rows is not None and inner.get_input_embeddings().num_embeddings > base_rows


def module_name(model: Any, module: Any) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


def embeddings_tied(model: Any) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


class PeftStrategy(Strategy):
    """See the module docstring."""

    name = "peft"
    config: PeftTuningConfig

    def __init__(self, config: PeftTuningConfig, family: Family):
        super().__init__(config, family)
        self.saved_modules: list[str] = []
        self.peft_model: Any = None
        self.initial: dict[str, Any] = {}  # adapter tensor name -> initial value (None: all zeros)
        self.counts: tuple[int, int] = (0, 0)
        self.unchanged: bool | None = None

    # --------------------------------------------------------------------------------------------- check

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        config, task = self.config, self.family.task
        method = config.method
        if method == "prompt_tuning" and task == "token_classification":
            self.refuse("prompt_tuning prepends virtual tokens, so a token classifier's outputs no longer line up "
                        "with the word labels; use method lora, ia3 or prefix_tuning")
        if method == "prompt_tuning" and any(type(s).token_loss_factor is not Strategy.token_loss_factor
                                             for s in others.values()):
            self.refuse("prompt_tuning lengthens the logits by the virtual tokens, which a per-token loss factor "
                        f"(strategy {', '.join(others)}) does not expect; use method lora")
        if method == "prefix_tuning":
            forward = inspect.signature(self.family.base(model).forward).parameters
            if "past_key_values" not in forward:
                self.refuse(f"prefix_tuning feeds its virtual keys and values through past_key_values, which "
                            f"{self.family.describe(model)} does not take; use method lora or prompt_tuning")
        if method in PROMPT_METHODS and config.save == "merged":
            self.refuse(f"{method}'s virtual tokens cannot be folded into the weights; set save: adapter")
        if config.mutates_base() and config.save == "adapter":
            self.refuse(f"init_lora_weights: {config.init_lora_weights} rewrites the base weights (W - scale * B0 A0), "
                        "so the adapter alone does not fit the original base; set save: merged, or init_lora_weights: "
                        "true or gaussian")
        names = [name for name, _ in model.named_modules() if name]
        if method in ("lora", "ia3") and config.target_modules != "all-linear":
            self.check_targets(model, names)
        for extra in config.modules_to_save:
            if not any(name.endswith(extra) for name in names):
                self.refuse(f"modules_to_save: {extra!r} matches no module of {self.family.describe(model)} "
                            f"(its top-level modules: {', '.join(n for n, _ in model.named_children())})")
        if self.trains_embeddings(model) and method != "lora" and embeddings_tied(model):
            self.refuse(f"training the tied embeddings of {self.family.describe(model)} needs method lora (PEFT "
                        "keeps trained tied copies tied only for LoRA); or set train_embeddings: false")
        if config.quantization != "none":
            self.check_quantization(model)

    def check_targets(self, model: Any, names: list[str]) -> None:
        import peft
        from peft.tuners.tuners_utils import check_target_module_exists

        probe = peft.LoraConfig(target_modules=self.config.target_modules)
        if not any(check_target_module_exists(probe, name) for name in names):
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if type(module).__name__ in ("Linear", "Conv1D")})
            self.refuse(f"target_modules {self.config.target_modules!r} matches no module of "
                        f"{self.family.describe(model)}; its linear layers are named {', '.join(linear)} "
                        "(or use 'all-linear')")

    def check_quantization(self, model: Any) -> None:
        config = self.config
        if self.family.task != "causal_lm":
            self.refuse(f"quantization: {config.quantization} (QLoRA) is for causal LMs, not "
                        f"{self.family.describe(model)}; set quantization: none")
        check_quantization_backend(config)
        if config.save == "merged":
            self.refuse(f"merging into {config.quantization} weights rounds the adapter away; set save: adapter "
                        "(adaptlab loads it onto the full-precision base and merges there)")
        if getattr(getattr(model, "config", None), "quantization_config", None) is None:
            self.refuse(f"quantization: {config.quantization} but {self.family.describe(model)} was loaded "
                        "unquantised; the recipe must load it with quantization_kwargs(strategy.peft)")

    def refuse(self, reason: str) -> None:
        raise StrategyError(self.name, reason)

    # ------------------------------------------------------------------------------------------- prepare

    def trains_embeddings(self, model: Any) -> bool:
        wanted = self.config.train_embeddings
        return embeddings_resized(model) if wanted == "auto" else wanted

    def modules_to_save(self, model: Any) -> list[str]:
        """The encoder's head, the embeddings when trained (module docstring), then the user's extra names."""
        names = list(self.family.head_module_names(model)) if self.family.kind == "encoder" else []
        if self.trains_embeddings(model):
            names.append(module_name(model, model.get_input_embeddings()))
            output = model.get_output_embeddings() if self.family.kind == "causal_lm" else None
            if output is not None and not embeddings_tied(model):
                names.append(module_name(model, output))
        return names + [name for name in self.config.modules_to_save if name not in names]

    def prepare_model(self, model: Any) -> Any:
        import peft

        if self.config.quantization != "none":
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        self.saved_modules = self.modules_to_save(model)
        adapter_config = peft_config(self.config, self.family.peft_task_type, self.saved_modules,
                                     tied=embeddings_tied(model))
        try:
            wrapped = peft.get_peft_model(model, adapter_config)
        except (ValueError, TypeError, NotImplementedError) as exc:
            self.refuse(f"peft cannot add a {self.config.method} adapter to {self.family.describe(model)}: {exc}")
        self.peft_model = wrapped
        self.initial = {name: None if not param.any() else param.detach().to("cpu", copy=True)
                        for name, param in self.adapter_tensors(wrapped)}
        self.counts = wrapped.get_nb_trainable_parameters()
        return wrapped

    @staticmethod
    def adapter_tensors(model: Any) -> list[tuple[str, Any]]:
        """The trainable tensors that make the adapter act (a zero LoRA B, ones in IA3 make it a no-op)."""
        return [(name, param) for name, param in model.named_parameters()
                if param.requires_grad and any(part in name for part in ADAPTER_TENSORS)]

    def lr_scale(self, model: Any) -> dict[int, float]:
        ratio = self.config.loraplus_lr_ratio
        if ratio is None:
            return {}
        return {id(param): ratio for name, param in model.named_parameters()
                if param.requires_grad and ("lora_B" in name or "lora_embedding_B" in name)}

    # ------------------------------------------------------------------------------------------ finalize

    def adapter_unchanged(self, model: Any) -> bool | None:
        """True when every adapter tensor still equals its initial value; None when they cannot be found."""
        current = dict(self.adapter_tensors(model)) if model is not None else {}
        if not self.initial or any(name not in current for name in self.initial):
            return None
        for name, start in self.initial.items():
            value = current[name].detach()
            if (value.any() if start is None else not value.cpu().equal(start)):
                return False
        return True

    def finalize(self, model: Any) -> Any:
        model = model if hasattr(model, "peft_config") else self.peft_model
        self.unchanged = self.adapter_unchanged(model)
        if self.unchanged:
            get_logger().warning("strategy.peft: the %s adapter is exactly as initialised, so training changed "
                                 "nothing (learning_rate too small, or no optimizer step?)", self.config.method)
        return model.merge_and_unload() if self.config.save == "merged" else model

    def summary(self) -> dict[str, Any]:
        trainable, total = self.counts
        unchanged = self.unchanged if self.unchanged is not None else self.adapter_unchanged(self.peft_model)
        out: dict[str, Any] = {"method": self.config.method, "trainable_parameters": trainable,
                               "total_parameters": total, "trainable_share": trainable / total if total else 0.0,
                               "modules_to_save": self.saved_modules, "save": self.config.save}
        if unchanged is not None:
            out["adapter_unchanged"] = unchanged
        return out


register(PeftTuningConfig, PeftStrategy)
