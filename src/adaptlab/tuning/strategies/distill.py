"""``strategy.distill``: knowledge distillation from a teacher model into the model being trained.

One config for both families; the work is done by the family's distiller (:mod:`adaptlab.tuning.distill`):

* encoder students (NER, text classification): a KL term between the temperature-softened teacher and student
  distributions over the label set, per token or per sequence, on the labelled rows and on unlabeled texts that
  only the teacher labels (``unlabeled``); optionally the student starts from a subset of the teacher's layers
  (``init_layers``, as DistilBERT did);
* causal LMs: forward KL, reverse KL or generalised JSD (``loss``, ``beta``) on the next-token distributions,
  optionally over the teacher's top-k tokens only, with on-policy student generations (``on_policy_fraction``).

In both, the loss is ``(1 - alpha) * task loss + alpha * T^2 * KD`` (the ``T^2`` keeps the KD gradients' scale
independent of the temperature, Hinton et al. 2015).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.tuning.families import Family
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy


class DistillConfig(StrictModel):
    """Distil a teacher into the student being trained (see the module docstring)."""

    teacher: str = Field(description="the teacher: a saved adaptlab model (run directory or model directory) of "
                                     "the same task, or for causal LMs any causal LM (directory or hub name) "
                                     "saved with the student's tokenizer")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KD term; the gold-label loss gets 1 - alpha")
    temperature: float = Field(2.0, gt=0, description="softens both distributions; the KD term is scaled by T^2")
    cache_teacher: bool = Field(True, description="compute the teacher's outputs once before training, not at every "
                                                  "epoch (causal LMs: its top-k per token, so only with top_k)")
    # encoder students
    unlabeled: list[str] = Field(default_factory=list,
                                 description="files of unlabeled texts (one per line, or records JSONL) that the "
                                             "teacher labels softly; encoder students only")
    init_layers: list[int] | None = Field(None, description="start the student from these teacher layers (e.g. "
                                                            "[0, 2, 4]) instead of the configured model")
    # causal LMs
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field("forward_kl", description="causal LMs: the divergence")
    beta: float = Field(0.5, ge=0, le=1, description="jsd: the mixture weight (0 is forward KL, 1 reverse KL)")
    top_k: int | None = Field(None, ge=1, description="causal LMs: compare over the teacher's top-k tokens only "
                                                      "(both distributions renormalised over them)")
    on_policy_fraction: float = Field(0.0, ge=0, le=1, description="causal LMs: share of batches replaced by the "
                                                                   "student's own generations (GKD's lambda)")
    max_new_tokens: int = Field(64, ge=1, description="causal LMs: length of on-policy generations")


class Distill(Strategy):
    """Dispatches to the family's distiller: ``Distill(config, family)`` returns an encoder or a causal one."""

    name = "distill"

    def __new__(cls, config: Any, family: Family) -> Any:
        if family.kind == "causal_lm":
            from adaptlab.tuning.distill.causal import CausalDistiller as implementation
        else:
            from adaptlab.tuning.distill.encoder import EncoderDistiller as implementation
        return implementation(config, family)


register(DistillConfig, Distill)
