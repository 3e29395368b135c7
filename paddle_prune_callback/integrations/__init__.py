"""Adapters that drive the pruning engine from other training frameworks' callback points.

``paddleformers``: :class:`~paddle_prune_callback.integrations.paddleformers.PruningTrainerCallback` for
PaddleFormers' ``Trainer`` (needs the ``paddleformers`` extra).
"""
