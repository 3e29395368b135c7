"""``PruningTrainerCallback``: the pruning callback for PaddleFormers' ``Trainer``.

It takes the arguments of :class:`~paddle_prune_callback.PruningCallback` and drives the same run (schedule,
engine, history, VisualDL, "not reached" report) from the ``Trainer``'s events:

- ``on_train_begin``: check the schedule against ``max_steps`` / ``num_train_epochs``, restore the pruning
  state of the checkpoint the ``Trainer`` resumed from, attach the engine to ``model`` and ``optimizer``;
- ``on_substep_end``: a backward pass without an update (gradient accumulation);
- ``on_optimizer_end``: after ``optimizer.step()``: re-apply the masks, count the step, prune at
  ``prune_steps``;
- ``on_epoch_end``: history and per-epoch logs, prune at ``prune_epochs``;
- ``on_save``: ``pruning_state.npz`` into the ``Trainer``'s ``checkpoint-<step>`` directory;
- ``on_train_end``: detach, summary, "not reached" warning.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable, Dict

import paddle

try:
    from paddleformers.trainer import TrainerCallback
except ImportError as err:  # pragma: no cover - exercised only without paddleformers installed
    raise ImportError("paddle_prune_callback.integrations.paddleformers needs PaddleFormers: "
                      "`pip install paddle-prune-callback[paddleformers]` (see docs/paddleformers.md).") from err

from ..callback import PruningCallback
from ..checkpoint import STATE_FILE, load_state, save_state_file
from ..criteria import CRITERIA
from ..fit_plan import FitPlan
from ..visualdl_log import SparsityLogger, is_main_process

CHECKPOINT_PREFIX = "checkpoint"   # PaddleFormers' PREFIX_CHECKPOINT_DIR: <output_dir>/checkpoint-<step>


def projection_weights(network: paddle.nn.Layer) -> Callable[[str, paddle.Tensor], bool]:
    """The default selection for transformers, as a ``parameters`` callable: the weights of the network's
    ``paddle.nn.Linear`` layers (the attention and MLP projections) except ``lm_head``. Embeddings, norms,
    biases and ``lm_head`` stay dense."""
    chosen = {id(layer.weight) for name, layer in network.named_sublayers()
              if isinstance(layer, paddle.nn.Linear) and "lm_head" not in name.split(".")}
    return lambda name, param: id(param) in chosen


class PruningTrainerCallback(TrainerCallback):
    """Gradual unstructured pruning for PaddleFormers' ``Trainer``.

    Args:
        **kwargs: the arguments of :class:`~paddle_prune_callback.PruningCallback` (``target_sparsity``,
            ``prune_steps`` or ``prune_epochs``, ``criterion``, ``schedule``, ``scope``, ``parameters``,
            ``threshold``, ``log_dir``, ``verbose``, ...), with two differences:

            - ``parameters`` defaults to the weights of the ``paddle.nn.Linear`` layers except ``lm_head``
              (the attention and MLP projections); embeddings and ``lm_head`` stay dense unless listed.
            - ``log_dir`` defaults to the ``Trainer``'s ``logging_dir`` when ``report_to`` includes
              ``"visualdl"``: the pruning run is written to ``<logging_dir>/pruning``, beside the
              ``Trainer``'s own VisualDL logs.
            - ``state_dir`` is not accepted: the pruning state is saved in the ``Trainer``'s own checkpoints
              (``save_strategy``) and restored by ``trainer.train(resume_from_checkpoint=...)``.

    ``prune_steps`` counts the ``Trainer``'s optimizer steps (``state.global_step`` before the step: 0 is
    the first update); ``prune_epochs`` its epochs.

    Examples:
        .. code-block:: python

            from paddleformers.trainer import Trainer, TrainingArguments
            from paddle_prune_callback.integrations.paddleformers import PruningTrainerCallback

            cb = PruningTrainerCallback(target_sparsity=0.5, prune_steps=range(10, 200, 10))
            Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train()
            cb.sparsity()["global"]   # 0.5, counted from the weights
    """

    def __init__(self, **kwargs):
        if "state_dir" in kwargs or "keep_checkpoints" in kwargs:
            raise TypeError("PruningTrainerCallback saves its state in the Trainer's checkpoints "
                            "(TrainingArguments(save_strategy=...), trainer.train(resume_from_checkpoint=...)); "
                            "do not pass `state_dir` or `keep_checkpoints`.")
        self._default_parameters = kwargs.get("parameters") is None
        self.pruning = PruningCallback(**kwargs)
        self._scaler = None

    # ------------------------------------------------------------------ results
    @property
    def pruner(self):
        return self.pruning.pruner

    @property
    def history(self):
        return self.pruning.history

    @property
    def not_reached(self):
        return self.pruning.not_reached

    def sparsity(self) -> Dict[str, float]:
        """``{parameter name: sparsity, ..., "global": x}``, counted from the weights (exact zeros)."""
        return self.pruning.sparsity()

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        run = self.pruning
        if args.fp16 and CRITERIA[run.criterion].needs_gradients:
            raise ValueError(f"criterion {run.criterion!r} reads gradients, but with fp16 loss scaling the "
                             f"Trainer's GradScaler is not visible to callbacks before the first update; use "
                             f"bf16 (no loss scaling) or criterion='magnitude'.")
        if self._default_parameters and run.pruner is None:
            run.parameters = projection_weights(model)
        if run.log_dir is None and "visualdl" in (args.report_to or ()) and args.logging_dir:
            run.log_dir = args.logging_dir
            run._logger = SparsityLogger(args.logging_dir)
        if state.global_step > 0:
            self._restore(args, state, model)
        plan = _trainer_plan(args, state, run)
        run._begin(model, optimizer, lambda: self._scaler, plan)

    def on_substep_end(self, args, state, control, **kwargs):
        self.pruning._batches += 1

    def on_optimizer_begin(self, args, state, control, scaler=None, **kwargs):
        self._scaler = scaler

    def on_optimizer_end(self, args, state, control, **kwargs):
        run = self.pruning
        run.steps_completed = state.global_step    # the Trainer's count, exact after a resume too
        run._batches += 1
        run._after_update()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.pruning._end_epoch()

    def on_save(self, args, state, control, **kwargs):
        saved = self.pruning.state_dict()   # on every rank: under data parallel it combines the g² sums
        directory = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}")
        if not is_main_process():
            return
        if os.path.isdir(directory):
            save_state_file(directory, saved)
        else:
            warnings.warn(f"PruningTrainerCallback: the Trainer saved a checkpoint, but {directory!r} does not exist, so "
                          f"the pruning state was not saved with it; resuming from that checkpoint will fail.",
                          UserWarning, stacklevel=2)

    def on_train_end(self, args, state, control, **kwargs):
        self.pruning._end()

    # ------------------------------------------------------------------ resume
    def _restore(self, args, state, model) -> None:
        """The Trainer resumed at ``state.global_step``: load the pruning state of that checkpoint."""
        candidates = [args.resume_from_checkpoint] if isinstance(args.resume_from_checkpoint, str) else []
        candidates.append(os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}"))
        path = next((os.path.join(c, STATE_FILE) for c in candidates if os.path.isfile(os.path.join(c, STATE_FILE))),
                    None)
        if path is None:
            raise FileNotFoundError(f"the Trainer resumed at global step {state.global_step}, but none of {candidates} "
                                    f"holds a {STATE_FILE}; resume from a checkpoint saved with this callback, or set "
                                    f"TrainingArguments(resume_from_checkpoint=<that directory>).")
        saved = load_state(path)
        run = self.pruning
        pruner = run.pruner or run._make_pruner(model)
        try:
            pruner.check_state_dict(saved)
        except ValueError as err:
            raise ValueError(f"cannot resume from {path!r}: {err}") from None
        pruner.set_state_dict(saved)
        run.pruner = pruner
        run._restore_progress(saved)
        if run.steps_completed != state.global_step:
            raise ValueError(f"{path!r} was saved after step {run.steps_completed}, but the Trainer resumed at "
                             f"step {state.global_step}.")


def _trainer_plan(args, state, run: PruningCallback) -> FitPlan:
    """What remains of the Trainer's run: ``state.max_steps`` updates in all, ``num_train_epochs`` epochs."""
    epochs = max(int(math.ceil(state.num_train_epochs)) - run.epochs_completed, 1)
    updates = state.max_steps - state.global_step if state.max_steps and state.max_steps > 0 else None
    return FitPlan(epochs, updates, int(args.gradient_accumulation_steps), None,
                   f"max_steps={state.max_steps}, num_train_epochs={state.num_train_epochs}")
