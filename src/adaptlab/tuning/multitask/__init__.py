"""Multi-task learning: one shared encoder, one head per task (NER, RE, text classification).

* :mod:`.sampling`: which task each batch comes from (proportional, equal, temperature), the epoch size, the order;
* :mod:`.model`: the shared-encoder model whose task views are transformers' own task models, and their export;
* :mod:`.tasks`: each task's rows, collator and dev metric, in the single-task students' encoding;
* :mod:`.fit`: the Trainer (task batches, per-task evaluation and losses) and :func:`.fit.fit_multitask`.

The recipe (``adaptlab multitask train``) is :mod:`adaptlab.recipes.multitask`.
"""
