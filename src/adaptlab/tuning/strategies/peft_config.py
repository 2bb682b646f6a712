"""The ``strategy.peft`` config section, with PEFT's own names, and the ``peft`` config objects built from it.

A LLaMA-Factory or PEFT user finds the keys they know: ``r``, ``lora_alpha``, ``lora_dropout``,
``target_modules``, ``use_rslora``, ``use_dora``, ``init_lora_weights``, ``loraplus_lr_ratio``,
``modules_to_save``, ``num_virtual_tokens``, ``feedforward_modules``. A key that belongs to another method than
the chosen one is an error (``use_dora`` with ``method: ia3`` would otherwise be silently ignored).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import StrategyError

Method = Literal["lora", "ia3", "prompt_tuning", "prefix_tuning"]
PROMPT_METHODS = ("prompt_tuning", "prefix_tuning")
ZERO_B_INITS = (True, "gaussian")  # inits that leave lora_B at 0 (the adapter starts as a no-op)
BASE_MUTATING_INITS = ("pissa", "olora")  # inits that rewrite the base weights: W_res = W - scale * B0 A0
INIT_CHOICES = "true, false, gaussian, pissa, pissa_niter_<n>, olora, orthogonal"

METHOD_KEYS: dict[str, tuple[Method, ...]] = {
    "r": ("lora",), "lora_alpha": ("lora",), "lora_dropout": ("lora",), "use_rslora": ("lora",),
    "use_dora": ("lora",), "init_lora_weights": ("lora",), "loraplus_lr_ratio": ("lora",),
    "target_modules": ("lora", "ia3"), "feedforward_modules": ("ia3",),
    "num_virtual_tokens": PROMPT_METHODS,
}


class PeftTuningConfig(StrictModel):
    """Parameter-efficient fine-tuning with the ``peft`` library: LoRA (and rsLoRA, DoRA, PiSSA, OLoRA, LoRA+,
    QLoRA), IA3, prompt tuning or prefix tuning. Only the adapter (plus ``modules_to_save``) is trained."""

    method: Method = Field("lora", description="lora | ia3 | prompt_tuning | prefix_tuning")
    r: int = Field(16, ge=1, description="LoRA rank (PEFT's r)")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator: scale = lora_alpha / r "
                                                     "(lora_alpha / sqrt(r) with use_rslora)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        "all-linear", description="modules that get an adapter: 'all-linear' (every linear layer but the output "
                                  "layer), a list of module names (a name matches a module whose dotted path "
                                  "ends with it), or a regular expression matched against the full path")
    feedforward_modules: list[str] | None = Field(
        None, description="IA3: which target modules are feed-forward (scaled on their input, not their output); "
                          "default: PEFT's table for the architecture")
    use_rslora: bool = Field(False, description="rank-stabilised LoRA: scale = lora_alpha / sqrt(r)")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (a trained magnitude per output row)")
    init_lora_weights: bool | str = Field(
        True, description=f"LoRA init: {INIT_CHOICES}. true: A random, B = 0 (a no-op before training); pissa and "
                          "olora rewrite the base weights, so they need save: merged")
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, description="LoRA+: lora_B parameters train at learning_rate * ratio (the paper uses 16)")
    num_virtual_tokens: int = Field(20, ge=1, description="prompt_tuning / prefix_tuning: virtual tokens learned")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: load the causal LM quantised with bitsandbytes (CUDA only); 4bit is NF4 with "
                            "double quantisation and bf16 (else fp16) compute")
    modules_to_save: list[str] = Field(
        default_factory=list, description="extra modules trained in full and saved with the adapter, added to the "
                                          "automatic ones (an encoder's head; the embeddings, see train_embeddings)")
    train_embeddings: bool | Literal["auto"] = Field(
        "auto", description="train and save the input (and untied output) embeddings in full; auto: when the "
                            "recipe resized them for added tokens (resize_token_embeddings in this module)")
    save: Literal["merged", "adapter"] = Field(
        "merged", description="merged: the adapter folded into the base weights (a plain model); adapter: only the "
                              "adapter and modules_to_save (adapter_config.json; needs the base model to load)")

    @field_validator("init_lora_weights")
    @classmethod
    def _known_init(cls, value: bool | str) -> bool | str:
        if isinstance(value, bool) or value in ("gaussian", "pissa", "olora", "orthogonal") \
                or re.fullmatch(r"pissa_niter_\d+", value):
            return value
        raise ValueError(f"init_lora_weights must be one of {INIT_CHOICES}, not {value!r}")

    @model_validator(mode="after")
    def _keys_of_the_method(self) -> PeftTuningConfig:
        for key in sorted(self.model_fields_set):
            methods = METHOD_KEYS.get(key)
            if methods is not None and self.method not in methods:
                raise ValueError(f"{key} applies to method {' or '.join(methods)}, not {self.method}")
        return self

    def mutates_base(self) -> bool:
        init = self.init_lora_weights
        return isinstance(init, str) and init.startswith(BASE_MUTATING_INITS)


def peft_config(config: PeftTuningConfig, task_type: str, modules_to_save: list[str], tied: bool) -> Any:
    """The ``peft`` config object for ``config``; ``tied``: the model ties its input and output embeddings
    (LoRA then keeps the trained embedding copies tied, PEFT's ``ensure_weight_tying``)."""
    import peft

    common = {"task_type": task_type, "modules_to_save": list(modules_to_save) or None}  # peft appends to it
    if config.method == "lora":
        embeddings_saved = any(name.split(".")[-1] in ("embed_tokens", "lm_head") for name in modules_to_save)
        return peft.LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                               target_modules=config.target_modules, use_rslora=config.use_rslora,
                               use_dora=config.use_dora, init_lora_weights=config.init_lora_weights,
                               ensure_weight_tying=tied and embeddings_saved, **common)
    if config.method == "ia3":
        return peft.IA3Config(target_modules=config.target_modules, feedforward_modules=config.feedforward_modules,
                              **common)
    cls = peft.PromptTuningConfig if config.method == "prompt_tuning" else peft.PrefixTuningConfig
    return cls(num_virtual_tokens=config.num_virtual_tokens, **common)


def quantization_kwargs(config: PeftTuningConfig | None) -> dict[str, Any]:
    """What a recipe passes to ``AutoModelForCausalLM.from_pretrained`` for QLoRA (``{}`` when not quantising).

    ``{"quantization_config": BitsAndBytesConfig(...), "device_map": {"": LOCAL_RANK}}``: 4bit is NF4 with double
    quantisation and bf16 compute (fp16 where the GPU has no bf16), as in the QLoRA paper. A
    :class:`StrategyError` when bitsandbytes or CUDA is missing.
    """
    if config is None or config.quantization == "none":
        return {}
    check_quantization_backend(config)
    import torch
    from transformers import BitsAndBytesConfig

    if config.quantization == "8bit":
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    else:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=compute)
    return {"quantization_config": bnb, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def check_quantization_backend(config: PeftTuningConfig) -> None:
    """QLoRA needs an importable bitsandbytes and a CUDA GPU; a :class:`StrategyError` names which is missing."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # not installed, or installed without its native library
        raise StrategyError("peft", f"quantization: {config.quantization} needs the bitsandbytes package, which "
                                    f"cannot be imported ({type(exc).__name__}: {exc}); pip install bitsandbytes, "
                                    "or set quantization: none") from None
    if not torch.cuda.is_available():
        raise StrategyError("peft", f"quantization: {config.quantization} needs a CUDA GPU (bitsandbytes "
                                    "quantises on the GPU) and none is visible; set quantization: none")
