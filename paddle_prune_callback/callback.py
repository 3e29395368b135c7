"""``PruningCallback``: gradual pruning inside ``paddle.Model.fit``, thin glue over :class:`Pruner`."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import paddle

from ._validation import check_choice, check_epochs, check_fraction, check_threshold, check_verbose
from .criteria import CRITERIA
from .engine import SCOPES, Pruner, require_dynamic_mode
from .parameters import ParameterSpec, check_parameter_spec
from .schedule import PruningSchedule, ScheduleSpec, check_schedule, default_prune_epochs
from .visualdl_log import SparsityLogger, format_table, is_main_process


class PruningCallback(paddle.callbacks.Callback):
    """Gradual unstructured pruning for ``paddle.Model.fit``.

    During training it accumulates each weight's squared gradient (for ``"gradient"`` and ``"fisher"``);
    at the end of each pruning epoch it prunes to the schedule's cumulative sparsity; after every
    optimizer update it re-applies the masks, so pruned weights stay exactly zero.

    Args:
        target_sparsity (float, optional): fraction of the pruned parameters' weights that are zero after
            the last pruning epoch, in [0, 1). Give this or ``threshold``. Default: None.
        prune_epochs (list[int], optional): 0-based epochs at whose end pruning happens, strictly
            increasing. Default: None, evenly spaced epochs over the first three quarters of the first
            ``fit`` (at most 10), leaving the rest to recover.
        criterion (str, optional): ``"magnitude"`` |w|, ``"gradient"`` mean g², or ``"fisher"``
            ½·mean(g²)·w² (Optimal Brain Damage with the empirical Fisher). Default: ``"fisher"``.
        schedule (str|callable, optional): ``"polynomial"``, ``"linear"``, ``"constant"`` or a callable
            ``(k, n) -> sparsity``; see :class:`PruningSchedule`. Default: ``"polynomial"``.
        scope (str, optional): ``"global"`` ranks all pruned weights together; ``"layer"`` gives every
            parameter the same sparsity. Default: ``"global"``.
        parameters (list[str]|callable, optional): names or fnmatch patterns of the parameters to prune,
            or a callable ``(name, param) -> bool``. Default: None, every trainable parameter with
            ``ndim >= 2`` outside normalization layers.
        threshold (float, optional): instead of ``target_sparsity``, prune at each pruning epoch every
            weight whose score is below this value. Default: None.
        log_dir (str, optional): VisualDL log directory; the pruning run is written to
            ``<log_dir>/pruning``. Default: None, no VisualDL output.
        verbose (int, optional): 0 silent, 1 a line per pruning epoch and a summary table at train end.
            Default: 1.

    Examples:
        .. code-block:: python

            import paddle
            from paddle_prune_callback import PruningCallback

            model = paddle.Model(net)
            model.prepare(paddle.optimizer.Adam(parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
            cb = PruningCallback(target_sparsity=0.9, prune_epochs=[1, 3, 5, 7], log_dir="runs/pruned")
            model.fit(train_data, epochs=8, callbacks=[cb])
            print(cb.sparsity()["global"])  # 0.9, counted from the weights
    """

    def __init__(self, target_sparsity: Optional[float] = None, prune_epochs: Optional[Sequence[int]] = None,
                 criterion: str = "fisher", schedule: ScheduleSpec = "polynomial", scope: str = "global",
                 parameters: ParameterSpec = None, threshold: Optional[float] = None,
                 log_dir: Optional[str] = None, verbose: int = 1):
        super().__init__()
        if target_sparsity is None and threshold is None:
            raise ValueError("pass `target_sparsity` (e.g. 0.9) or `threshold` (prune scores below it).")
        if target_sparsity is not None and threshold is not None:
            raise ValueError(f"pass either `target_sparsity` ({target_sparsity!r}) or `threshold` "
                             f"({threshold!r}), not both.")
        self.target_sparsity = None if target_sparsity is None else check_fraction("target_sparsity",
                                                                                   target_sparsity)
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.prune_epochs = None if prune_epochs is None else check_epochs(prune_epochs)
        self.criterion = check_choice("criterion", criterion, tuple(CRITERIA))
        self.schedule = check_schedule(schedule)
        self.scope = check_choice("scope", scope, SCOPES)
        self.parameters = check_parameter_spec(parameters)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path or None, got {log_dir!r}.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.verbose = check_verbose(verbose)
        self._schedule = self._make_schedule() if self.prune_epochs is not None else None
        self.pruner: Optional[Pruner] = None
        self.epochs_completed = 0
        self.history: List[Dict[str, object]] = []
        self._logger = SparsityLogger(self.log_dir) if self.log_dir is not None else None

    def _make_schedule(self) -> Optional[PruningSchedule]:
        if self.target_sparsity is None:
            return None
        return PruningSchedule(self.target_sparsity, self.prune_epochs, self.schedule)

    # ------------------------------------------------------------------ fit hooks
    def on_train_begin(self, logs=None) -> None:
        require_dynamic_mode()
        fit_epochs = self.params.get("epochs")
        last_epoch = self.epochs_completed + fit_epochs - 1
        prune_epochs = self.prune_epochs or tuple(self.epochs_completed + e for e in default_prune_epochs(fit_epochs))
        beyond = [e for e in prune_epochs if e > last_epoch]
        if beyond:
            raise ValueError(f"`prune_epochs` {list(prune_epochs)} asks to prune at epoch(s) {beyond}, but this fit "
                             f"ends at epoch {last_epoch} ({self.epochs_completed} epochs done before it + "
                             f"epochs={fit_epochs}); pass epochs >= {beyond[-1] - self.epochs_completed + 1} to "
                             f"fit, or prune earlier.")
        pruner = self.pruner or Pruner(self.model.network, self.criterion, self.scope, self.parameters)
        self.prune_epochs = prune_epochs
        self._schedule = self._make_schedule()
        self.pruner = pruner
        model = self.model
        pruner.attach(model._optimizer, scaler=lambda: getattr(model, "_scaler", None))

    def on_train_batch_end(self, step, logs=None) -> None:
        self.pruner.step()

    def on_epoch_end(self, epoch, logs=None) -> None:
        epoch = self.epochs_completed
        if self._schedule is not None:
            should_prune, target = self._schedule(epoch)
        else:
            should_prune, target = epoch in self.prune_epochs, None
        if should_prune:
            if target is not None:
                sparsity = self.pruner.prune(sparsity=target)
            else:
                sparsity = self.pruner.prune(threshold=self.threshold)
        else:
            sparsity = self.pruner.sparsity()
        self.history.append({"epoch": epoch, "pruned": should_prune, "target_sparsity": target,
                             "sparsity": sparsity["global"]})
        if self._logger is not None:
            self._logger.log_epoch(epoch, sparsity, target)
            if should_prune:
                self._logger.log_prune(epoch, self.pruner.last_scores, self.pruner.surviving_weights())
        if should_prune and self.verbose and is_main_process():
            goal = f"target {target:.2%}" if target is not None else f"scores < {self.threshold:g}"
            print(f"PruningCallback: epoch {epoch}: sparsity {sparsity['global']:.2%} ({goal}, "
                  f"{self.criterion}, {self.scope})", flush=True)
        self.epochs_completed += 1

    def on_train_end(self, logs=None) -> None:
        self.pruner.detach()
        table = format_table(self.pruner.table(), self.pruner.sparsity()["global"])
        final = self.pruner.sparsity()["global"]
        if self.verbose and is_main_process():
            print(f"PruningCallback: final global sparsity {final:.2%}\n{table}", flush=True)
        if self._logger is not None:
            self._logger.log_summary(self.epochs_completed - 1, table, self._hparams(), final)
            self._logger.close()

    # ------------------------------------------------------------------ results
    def sparsity(self) -> Dict[str, float]:
        """``{parameter name: sparsity, ..., "global": x}``, counted from the weights (exact zeros)."""
        if self.pruner is None:
            raise RuntimeError("the callback has not been used in a fit yet; nothing to measure.")
        return self.pruner.sparsity()

    def _hparams(self) -> Dict[str, object]:
        schedule = self.schedule if isinstance(self.schedule, str) else "callable"
        hp = {"criterion": self.criterion, "scope": self.scope, "schedule": schedule,
              "prune_epochs": ",".join(map(str, self.prune_epochs))}
        if self.target_sparsity is not None:
            hp["target_sparsity"] = self.target_sparsity
        else:
            hp["threshold"] = self.threshold
        return hp
