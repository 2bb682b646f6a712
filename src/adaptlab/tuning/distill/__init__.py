"""Knowledge distillation (``strategy.distill``): the encoder distiller and the causal-LM distiller, each a
:class:`~adaptlab.tuning.strategies.base.Strategy` with ``name = "distill"``."""
