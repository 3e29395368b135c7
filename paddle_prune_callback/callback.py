"""``PruningCallback``: gradual pruning inside ``paddle.Model.fit``, thin glue over :class:`Pruner`."""
from __future__ import annotations

import bisect
import math
import os
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

from ._validation import check_bool, check_choice, check_epochs, check_fraction, check_threshold, check_verbose
from .checkpoint import (MODEL_PREFIX, STATE_FILE, latest_checkpoint, load_state, rename_optimizer_state,
                         save_checkpoint)
from .criteria import CRITERIA
from .engine import SCOPES, Pruner, require_dynamic_mode
from .fit_plan import FitPlan, hapi_fit_plan
from .masks import MASK_DTYPES
from .parameters import ParameterSpec, check_parameter_spec
from .patterns import PatternSpec, check_pattern
from .schedule import PruningSchedule, ScheduleSpec, check_schedule, default_prune_epochs
from .visualdl_log import SparsityLogger, format_table, is_main_process


class PruningCallback(paddle.callbacks.Callback):
    """Gradual unstructured pruning for ``paddle.Model.fit``.

    During training it accumulates each weight's squared gradient (for every criterion but ``"magnitude"``);
    at the end of each pruning epoch (or after each pruning step) it prunes to the schedule's cumulative
    sparsity; after every optimizer update it re-applies the masks, so pruned weights stay exactly zero.

    Args:
        target_sparsity (float, optional): fraction of the pruned parameters' weights that are zero after
            the last pruning epoch, in [0, 1). Give this or ``threshold`` (or neither, with ``hold_zeros``:
            then the callback only holds the zeros it finds); with an N:M ``pattern`` it may be omitted (it is
            1 − N/M). Default: None.
        prune_epochs (list[int], optional): 0-based epochs at whose end pruning happens, strictly
            increasing. Default: None, evenly spaced epochs over the first three quarters of the first
            ``fit`` (at most 10), leaving the rest to recover.
        criterion (str, optional): ``"magnitude"`` |w|, ``"gradient"`` mean g², ``"fisher"``
            ½·mean(g²)·w² (Optimal Brain Damage with the empirical Fisher), or ``"hybrid"`` w²·sqrt(mean g²)
            (ranks like |w|·F^¼). Default: ``"hybrid"``, chosen by measurement (``docs/accuracy.md``).
        schedule (str|callable, optional): ``"polynomial"``, ``"linear"``, ``"constant"`` or a callable
            ``(k, n) -> sparsity``; see :class:`PruningSchedule`. Default: ``"polynomial"``.
        scope (str, optional): ``"global"`` ranks all pruned weights together; ``"layer"`` gives every
            parameter the same sparsity. Default: ``"global"``.
        parameters (list[str]|callable, optional): names or fnmatch patterns of the parameters to prune,
            or a callable ``(name, param) -> bool``. Default: None, every trainable parameter with
            ``ndim >= 2`` outside normalization layers.
        threshold (float, optional): instead of ``target_sparsity``, prune at each pruning epoch every
            weight whose score is below this value. Default: None.
        pattern (str|Pattern, optional): which weights compete: ``"unstructured"`` (any weight),
            ``"channel"`` (whole channel groups, for :func:`~paddle_prune_callback.slim`; the network is
            traced from ``paddle.Model(inputs=...)`` when given, else from the first training batch),
            ``"N:M"`` such as ``"2:4"`` (at most N non-zeros in every group of M along the input dimension,
            in ``paddle.incubate.asp``'s layout; see :class:`~paddle_prune_callback.nm.NMPattern`), or a
            :class:`~paddle_prune_callback.patterns.Pattern`. Default: ``"unstructured"``.
        mask_dtype (str, optional): how masks are held on the device: ``"bool"`` (1 byte per weight),
            ``"float"`` (the parameter's dtype; faster to re-apply on CPU) or ``"auto"`` (``"float"`` for
            float32/float64 parameters on CPU, ``"bool"`` otherwise). Default: ``"auto"``.
        hold_zeros (bool, optional): mask the weights that are exactly zero when training starts (a pruned
            checkpoint's): counted as pruned, never revived, their optimizer state zeroed. Schedule targets
            below the sparsity found prune nothing more. Default: False (zero-initialised layers, such as
            LoRA's B matrix, must be free to grow).
        log_dir (str, optional): VisualDL log directory; the pruning run is written to
            ``<log_dir>/pruning``. Default: None, no VisualDL output.
        verbose (int, optional): 0 silent, 1 a line per pruning epoch and a summary table at train end.
            Default: 1.
        state_dir (str, optional): at every epoch end, save the model, its optimizer and the pruning state
            (masks, squared-gradient accumulators, schedule position, configuration) to
            ``<state_dir>/epoch_<n>``, atomically; resume with :meth:`resume`. Default: None.
        keep_checkpoints (int, optional): how many ``epoch_<n>`` directories to keep. Default: 2.
        prune_steps (list[int]|range, optional): instead of ``prune_epochs``, 0-based global optimizer
            update indices after which to prune, strictly increasing, e.g. ``range(200, 6000, 200)``. With
            ``accumulate_grad_batches=k``, k batches are one step. Default: None.

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
                 criterion: str = "hybrid", schedule: ScheduleSpec = "polynomial", scope: str = "global",
                 parameters: ParameterSpec = None, threshold: Optional[float] = None,
                 log_dir: Optional[str] = None, verbose: int = 1, state_dir: Optional[str] = None,
                 keep_checkpoints: int = 2, pattern: PatternSpec = "unstructured",
                 prune_steps: Optional[Sequence[int]] = None, mask_dtype: str = "auto", hold_zeros: bool = False):
        super().__init__()
        if prune_epochs is not None and prune_steps is not None:
            raise ValueError(f"pass either `prune_epochs` ({prune_epochs!r}) or `prune_steps` ({prune_steps!r}), "
                             f"not both.")
        self.scope = check_choice("scope", scope, SCOPES)
        self.pattern = check_pattern(pattern, scope=self.scope, threshold=threshold, target_sparsity=target_sparsity)
        self.mask_dtype = check_choice("mask_dtype", mask_dtype, MASK_DTYPES)
        self.hold_zeros = check_bool("hold_zeros", hold_zeros)
        if target_sparsity is None and threshold is None:
            target_sparsity = self.pattern.default_sparsity()
        if target_sparsity is None and threshold is None and not hold_zeros:
            raise ValueError("pass `target_sparsity` (e.g. 0.9) or `threshold` (prune scores below it).")
        if target_sparsity is not None and threshold is not None:
            raise ValueError(f"pass either `target_sparsity` ({target_sparsity!r}) or `threshold` "
                             f"({threshold!r}), not both.")
        self.target_sparsity = None if target_sparsity is None else check_fraction("target_sparsity",
                                                                                   target_sparsity)
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.prune_epochs = None if prune_epochs is None else check_epochs(prune_epochs)
        self.prune_steps = None if prune_steps is None else check_epochs(prune_steps, "prune_steps")
        self._holds_only = self.target_sparsity is None and self.threshold is None
        if self._holds_only and (self.prune_epochs or self.prune_steps) is not None:
            events = list(self.prune_epochs or self.prune_steps)
            raise ValueError(f"`prune_epochs`/`prune_steps` ({events}) need `target_sparsity` or `threshold`; "
                             f"with `hold_zeros` alone the callback only holds the zeros it finds.")
        self.criterion = check_choice("criterion", criterion, tuple(CRITERIA))
        self.schedule = check_schedule(schedule)
        self.parameters = check_parameter_spec(parameters)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path or None, got {log_dir!r}.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        if state_dir is not None and not isinstance(state_dir, (str, os.PathLike)):
            raise TypeError(f"`state_dir` must be a path or None, got {state_dir!r}.")
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"`keep_checkpoints` must be an integer >= 1, got {keep_checkpoints!r}.")
        self.keep_checkpoints = keep_checkpoints
        self.verbose = check_verbose(verbose)
        self.pruner: Optional[Pruner] = None
        self.epochs_completed = 0
        self.steps_completed = 0
        self.history: List[Dict[str, object]] = []
        self.not_reached: List[int] = []
        self._schedule = self._make_schedule() if self._events is not None else None
        self._plan: Optional[FitPlan] = None
        self._batches = 0             # backward passes since the last optimizer update
        self._step_events: frozenset = frozenset()
        self._logger = SparsityLogger(self.log_dir) if self.log_dir is not None else None
        self._trace_hook = None

    @property
    def _unit(self) -> str:
        return "step" if self.prune_steps is not None else "epoch"

    @property
    def _events(self) -> Optional[tuple]:
        return self.prune_steps if self.prune_steps is not None else self.prune_epochs

    def _make_schedule(self) -> Optional[PruningSchedule]:
        if self.target_sparsity is None:
            return None
        return PruningSchedule(self.target_sparsity, self._events, self.schedule)

    def _target(self, index: int) -> Optional[float]:
        """The schedule's cumulative target once the epoch or step ``index`` has ended (None: threshold)."""
        return None if self._schedule is None else self._schedule(index)[1]

    # ------------------------------------------------------------------ fit hooks
    def on_train_begin(self, logs=None) -> None:
        model = self.model
        self._begin(model.network, model._optimizer, lambda: getattr(model, "_scaler", None),
                    hapi_fit_plan(self.params, model))

    def on_train_batch_end(self, step, logs=None) -> None:
        self._batches += 1
        if self._plan.is_update(step):
            self._after_update()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._end_epoch()
        if self.state_dir is not None:
            state = self.state_dict()   # on every rank: under data parallel it combines the g² sums
            if is_main_process():
                save_checkpoint(self.state_dir, self.epochs_completed - 1, self.model, state, self.keep_checkpoints)

    def on_eval_end(self, logs=None) -> None:
        if self._logger is not None and logs:
            names = self.params.get("metrics") or ()
            self._logger.log_eval(self.epochs_completed - 1, {k: logs[k] for k in names if k in logs})

    def on_train_end(self, logs=None) -> None:
        self._end()

    # ------------------------------------------------------------------ the run, whatever drives it
    def _begin(self, network: paddle.nn.Layer, optimizer, scaler, plan: FitPlan) -> None:
        """Check the schedule against the run and attach; nothing changes before the checks pass."""
        require_dynamic_mode()
        if self.prune_steps is None:
            last_epoch = self.epochs_completed + plan.epochs - 1
            prune_epochs = () if self._holds_only else self.prune_epochs or tuple(
                self.epochs_completed + e for e in default_prune_epochs(plan.epochs))
            beyond = [e for e in prune_epochs if e > last_epoch]
            if beyond:
                fix = (f"pass epochs >= {beyond[-1] - self.epochs_completed + 1} to fit" if plan.why.startswith("epochs")
                       else "let the run last longer")
                raise ValueError(f"`prune_epochs` {list(prune_epochs)} asks to prune at epoch(s) {beyond}, but this "
                                 f"fit ends at epoch {last_epoch} ({self.epochs_completed} epochs done before it + "
                                 f"{plan.why}); {fix}, or prune earlier.")
        elif plan.updates is not None:
            last_step = self.steps_completed + plan.updates - 1
            beyond = [s for s in self.prune_steps if s > last_step]
            if beyond:
                raise ValueError(f"`prune_steps` asks to prune after step(s) {_few(beyond)}, but this run's last "
                                 f"optimizer step is {last_step} ({self.steps_completed} steps done before it + "
                                 f"{plan.updates} in it: {plan.why}, {plan.accumulate} batch(es) per step); train "
                                 f"longer, or end `prune_steps` at or before step {last_step}.")
        if self.pruner is not None and self.pruner.network is not network:
            raise ValueError("this PruningCallback already prunes another network; create a new callback for "
                             "each model.")
        pruner = self.pruner
        if pruner is None and self.pattern.needs_example_inputs:
            specs = model_input_specs(getattr(self, "model", None))
            if specs is not None:
                self.pattern = self.pattern.with_example_inputs(specs)
        if pruner is None and not self.pattern.needs_example_inputs:
            pruner = self._make_pruner(network)
        if self.prune_steps is None:
            self.prune_epochs = prune_epochs
        self._schedule = self._make_schedule()
        self._step_events = frozenset(self.prune_steps or ())
        self._plan = plan
        self._batches = 0
        self.not_reached = []
        self.pruner = pruner
        if pruner is None:   # the pattern traces the network: from the first training batch, before its forward
            self._trace_hook = network.register_forward_pre_hook(self._first_batch_hook(network, optimizer, scaler))
        else:
            pruner.attach(optimizer, scaler=scaler)

    def _first_batch_hook(self, network: paddle.nn.Layer, optimizer, scaler):
        def hook(layer, inputs):
            self._trace_hook.remove()
            self._trace_hook = None
            self.pattern = self.pattern.with_example_inputs([x for x in inputs if isinstance(x, paddle.Tensor)])
            self.pruner = self._make_pruner(network)
            self.pruner.attach(optimizer, scaler=scaler)
        return hook

    def _make_pruner(self, network: paddle.nn.Layer) -> Pruner:
        return Pruner(network, self.criterion, self.scope, self.parameters, pattern=self.pattern,
                      mask_dtype=self.mask_dtype, hold_zeros=self.hold_zeros)

    def _after_update(self, batches: Optional[int] = None) -> None:
        """After an optimizer update: re-apply the masks, count the update's batches and the step, and
        prune when the step is one of ``prune_steps``."""
        self.pruner.step(batches=batches or max(self._batches, 1))
        self._batches = 0
        step = self.steps_completed
        self.steps_completed += 1
        if step in self._step_events:
            self._prune(step)

    def _prune(self, index: int) -> Dict[str, float]:
        """One prune event at the epoch or step ``index``: prune, log, report."""
        target = self._target(index)
        if target is not None:
            sparsity = self.pruner.prune(sparsity=target)
        else:
            sparsity = self.pruner.prune(threshold=self.threshold)
        if self._logger is not None:
            if self._unit == "step":
                self._logger.log_step(self.epochs_completed, index, sparsity, target)
            self._logger.log_prune(index, self.pruner.last_scores, self.pruner.surviving_weights())
        if self.verbose and is_main_process():
            goal = f"target {target:.2%}" if target is not None else f"scores < {self.threshold:g}"
            print(f"PruningCallback: {self._unit} {index}: sparsity {sparsity['global']:.2%} ({goal}, "
                  f"{self.criterion}, {self.scope})", flush=True)
        return sparsity

    def _end_epoch(self) -> None:
        epoch = self.epochs_completed
        if self._unit == "epoch":
            pruned = epoch in self.prune_epochs
            sparsity = self._prune(epoch) if pruned else self.pruner.sparsity()
            target = self._target(epoch)
        else:
            # a step event since the previous epoch's end (from the counts: exact after a mid-epoch resume)
            since = max(self.history[-1].get("step", 0), 0) if self.history else 0
            first, end = (bisect.bisect_left(self.prune_steps, s) for s in (since, self.steps_completed))
            pruned = first < end
            sparsity, target = self.pruner.sparsity(), self._target(self.steps_completed - 1)
        self.history.append({"epoch": epoch, "step": self.steps_completed, "pruned": pruned,
                             "target_sparsity": target, "sparsity": sparsity["global"]})
        if self._logger is not None:
            self._logger.log_epoch(epoch, sparsity, target)
        self.epochs_completed += 1

    def _end(self) -> None:
        """Detach; report the final sparsity, and whether prune events of the schedule did not run."""
        self.pruner.detach()
        final = self.pruner.sparsity()["global"]
        done = self.steps_completed if self._unit == "step" else self.epochs_completed
        self.not_reached = [e for e in self._events if e >= done]
        table = "\n".join([format_table(self.pruner.table(), final)] + self.pruner.summary())
        if self.not_reached:
            note = self._not_reached_note(final)
            warnings.warn(note, UserWarning, stacklevel=2)
            table = f"{table}\n{note}"
            if self.history:
                self.history[-1]["not_reached"] = list(self.not_reached)
        if self.verbose and is_main_process():
            print(f"PruningCallback: final global sparsity {final:.2%}\n{table}", flush=True)
        if self._logger is not None:
            self._logger.log_summary(self.epochs_completed - 1, table, self._hparams())
            self._logger.close()

    def _not_reached_note(self, final: float) -> str:
        goal = (f"target sparsity {self.target_sparsity:.2%}" if self.target_sparsity is not None
                else f"pruning schedule (threshold {self.threshold:g})")
        done = self.steps_completed if self._unit == "step" else self.epochs_completed
        return (f"PruningCallback: {goal} not reached, final sparsity {final:.2%}: prune {self._unit}s "
                f"{_few(self.not_reached)} did not run (training stopped after {done} {self._unit}s).")

    # ------------------------------------------------------------------ results
    def sparsity(self) -> Dict[str, float]:
        """``{parameter name: sparsity, ..., "global": x}``, counted from the weights (exact zeros)."""
        if self.pruner is None:
            raise RuntimeError("the callback has not been used in a fit yet; nothing to measure.")
        return self.pruner.sparsity()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, np.ndarray]:
        """The engine's state plus the schedule position and configuration, as plain numpy arrays.

        Under data parallel every rank must call it (it all-reduces the squared-gradient sums)."""
        if self.pruner is None:
            raise RuntimeError("the callback has not been used in a fit yet; there is no state to save.")
        nan = float("nan")
        if self.parameters is None or callable(self.parameters):
            parameters = np.asarray([], dtype=str)
            kind = "callable" if callable(self.parameters) else "default"
        else:
            parameters, kind = np.asarray(self.parameters, dtype=str), "list"
        config = {
            "target_sparsity": np.asarray(nan if self.target_sparsity is None else self.target_sparsity),
            "threshold": np.asarray(nan if self.threshold is None else self.threshold),
            "prune_epochs": np.asarray(self.prune_epochs or (), dtype=np.int64),
            "prune_steps": np.asarray(self.prune_steps or (), dtype=np.int64),
            "schedule": np.asarray(self.schedule if isinstance(self.schedule, str) else "<callable>"),
            "scope": np.asarray(self.scope),
            "hold_zeros": np.asarray(self.hold_zeros),
            "parameters": parameters,
            "parameters_kind": np.asarray(kind),
            "epochs_completed": np.asarray(self.epochs_completed, dtype=np.int64),
            "steps_completed": np.asarray(self.steps_completed, dtype=np.int64),
            "history_step": np.asarray([h.get("step", -1) for h in self.history], dtype=np.int64),
            "history_pruned": np.asarray([h["pruned"] for h in self.history], dtype=bool),
            "history_target": np.asarray([nan if h["target_sparsity"] is None else h["target_sparsity"]
                                          for h in self.history], dtype=np.float64),
            "history_sparsity": np.asarray([h["sparsity"] for h in self.history], dtype=np.float64),
        }
        state = {f"callback/{k}": v for k, v in config.items()}
        # Optimizer state is keyed by generated parameter names, which differ when the network is rebuilt
        # in the same process: keep them, so that resume() can map the saved optimizer state onto new ones.
        state.update({f"param_name/{n}": np.asarray(p.name) for n, p in self.pruner.network.named_parameters()})
        state.update(self.pruner.state_dict())
        return state

    @classmethod
    def resume(cls, from_dir: str, model: paddle.Model, **overrides) -> "PruningCallback":
        """Continue a run saved with ``state_dir``: load its newest complete checkpoint into ``model`` and
        return a callback that carries on with the same masks, scores and schedule.

        Call it on a model built and ``prepare``-d as before, then ``fit`` for the remaining epochs::

            cb = PruningCallback.resume("ckpt/pruning", model)
            model.fit(train_data, epochs=total_epochs - cb.epochs_completed, callbacks=[cb])

        Args:
            from_dir (str): the ``state_dir`` of the interrupted run; the resumed run keeps saving there
                unless ``state_dir`` is overridden.
            model (paddle.Model): the model to restore weights and optimizer state into.
            **overrides: ``log_dir``, ``verbose``, ``state_dir``, ``keep_checkpoints``; ``schedule`` /
                ``parameters`` when the saved run used callables (those cannot be saved); ``pattern``, a
                :class:`~paddle_prune_callback.patterns.Pattern` of the saved pattern's name (for one
                built with arguments).

        Raises:
            FileNotFoundError: no complete checkpoint under ``state_dir``.
            ValueError: the state file is truncated or does not fit ``model`` (other parameter names or
                shapes, other criterion); the model is left untouched.
        """
        allowed = {"log_dir", "verbose", "state_dir", "keep_checkpoints", "schedule", "parameters", "pattern",
                   "mask_dtype"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise TypeError(f"resume() cannot override {unknown}: they are part of the saved run; it accepts "
                            f"{sorted(allowed)}.")
        path = latest_checkpoint(from_dir)
        if path is None:
            raise FileNotFoundError(f"no complete checkpoint (epoch_<n>/{STATE_FILE} with the model) under "
                                    f"{from_dir!r}.")
        state_file = os.path.join(path, STATE_FILE)
        state = load_state(state_file)
        try:
            cb = cls._from_state(state, overrides, from_dir)
            specs = model_input_specs(model) if cb.pattern.needs_example_inputs else None
            if specs is not None:
                cb.pattern = cb.pattern.with_example_inputs(specs)
            cb.pruner = cb._make_pruner(model.network)
            cb.pruner.check_state_dict(state)
        except (KeyError, TypeError, ValueError) as err:
            detail = f"missing entry {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"cannot resume from {state_file!r}: {detail}") from None
        prefix = os.path.join(path, MODEL_PREFIX)
        model.load(prefix, reset_optimizer=True)
        if model._optimizer is not None and os.path.isfile(prefix + ".pdopt"):
            model._optimizer.set_state_dict(rename_optimizer_state(paddle.load(prefix + ".pdopt"), state, model))
        cb.pruner.set_state_dict(state)
        return cb

    @classmethod
    def _from_state(cls, state: Dict[str, np.ndarray], overrides: Dict[str, object], state_dir: str):
        get = lambda key: state[f"callback/{key}"]
        optional = lambda key: None if math.isnan(float(get(key))) else float(get(key))
        kind = str(get("parameters_kind"))
        schedule = str(get("schedule"))
        if schedule == "<callable>" and not callable(overrides.get("schedule")):
            raise ValueError("the saved run used a callable `schedule`; pass the same callable: "
                             "resume(..., schedule=fn).")
        if kind == "callable" and not callable(overrides.get("parameters")):
            raise ValueError("the saved run used a callable `parameters`; pass the same callable: "
                             "resume(..., parameters=fn).")
        steps = [int(s) for s in state.get("callback/prune_steps", ())]
        config = dict(target_sparsity=optional("target_sparsity"), threshold=optional("threshold"),
                      prune_epochs=None if steps else [int(e) for e in get("prune_epochs")] or None,
                      prune_steps=steps or None, criterion=str(state["criterion"]),
                      schedule=schedule, scope=str(get("scope")),
                      parameters=[str(p) for p in get("parameters")] if kind == "list" else None,
                      pattern=str(state["pattern"]) if "pattern" in state else "unstructured", state_dir=state_dir,
                      hold_zeros=bool(state.get("callback/hold_zeros", False)))
        config.update(overrides)
        cb = cls(**config)
        cb._restore_progress(state)
        return cb

    def _restore_progress(self, state: Dict[str, np.ndarray]) -> None:
        """Epochs and steps done, and the history, from a saved state."""
        get = lambda key: state[f"callback/{key}"]
        self.epochs_completed = int(get("epochs_completed"))
        self.steps_completed = int(state.get("callback/steps_completed", 0))
        pruned, targets, sparsities = get("history_pruned"), get("history_target"), get("history_sparsity")
        steps_at = state.get("callback/history_step", np.full(len(pruned), -1))
        self.history = [{"epoch": e, "step": int(n), "pruned": bool(p),
                         "target_sparsity": None if math.isnan(t) else float(t), "sparsity": float(s)}
                        for e, (n, p, t, s) in enumerate(zip(steps_at, pruned, targets, sparsities))]

    def _hparams(self) -> Dict[str, object]:
        schedule = self.schedule if isinstance(self.schedule, str) else "callable"
        hp = {"criterion": self.criterion, "pattern": self.pattern.name, "scope": self.scope, "schedule": schedule,
              f"prune_{self._unit}s": ",".join(map(str, self._events))}
        if self.target_sparsity is not None:
            hp["target_sparsity"] = self.target_sparsity
        elif self.threshold is not None:
            hp["threshold"] = self.threshold
        return hp


def model_input_specs(model) -> Optional[list]:
    """The ``InputSpec`` objects given to ``paddle.Model(inputs=...)`` when every axis but the batch is known."""
    if getattr(model, "_input_info", None) is None:
        return None
    specs = model._inputs if isinstance(model._inputs, (list, tuple)) else [model._inputs]
    if not specs or not all(isinstance(s, paddle.static.InputSpec) and s.shape is not None
                            and all(d is not None and d > 0 for d in list(s.shape)[1:]) for s in specs):
        return None
    return list(specs)


def _few(indices: Sequence[int], shown: int = 8) -> str:
    """``[1, 2, 3]``, or the first few and a count for long lists."""
    indices = list(indices)
    if len(indices) <= shown:
        return str(indices)
    return f"[{', '.join(map(str, indices[:shown]))}, ... ({len(indices)} in all)]"
