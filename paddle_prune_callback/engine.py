"""The pruning engine: squared-gradient accumulation, masks that hold, pruning, measured sparsity.

It works on any ``paddle.nn.Layer`` with any optimizer; :class:`~paddle_prune_callback.PruningCallback`
drives it from ``paddle.Model.fit``, and a hand-written training loop drives it directly::

    pruner = Pruner(net, criterion="hybrid")
    pruner.attach(optimizer)                 # gradient hooks: accumulate g², mask gradients
    for epoch in range(epochs):
        for x, y in loader:
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            pruner.step()                    # re-apply the masks after the update
        should_prune, sparsity = schedule(epoch)    # a PruningSchedule
        if should_prune:
            pruner.prune(sparsity=sparsity)
    pruner.detach()

``Pruner`` composes a criterion (``criteria.py``: the scores), a pattern (``patterns.py``: which weights
compete, and the masks' shape) and a schedule (``schedule.py``, driven by the caller: when and how much).
Its lifecycle:

1. ``__init__``: validate the arguments, resolve the ``parameters`` selection, let the pattern check its
   options and ``plan`` the managed parameters (it may leave some dense with a reason, or add coupled
   ones). Nothing changes before all of this has passed.
2. ``attach``: gradient hooks on the managed parameters (accumulate g² in ``accumulate.py``, mask
   gradients); with ``hold_zeros``, mask the weights that are exactly zero now; re-apply the masks.
3. ``step`` after every optimizer update: re-apply the masks, commit the batch's g².
4. ``prune``: check weights and g² are finite, hand the pattern a ``ScoreSource`` (scores on demand, one
   parameter at a time, on the parameter's device; weights already pruned or exactly zero score −1), AND
   the keep-masks it returns with the old ones, apply them all or none (weights, optimizer state, masks),
   restart g².

Masks (``masks.py``) live on the parameter's device, as 1-byte bools or in the parameter's dtype
(``mask_dtype``); nothing is copied to the host except a checkpoint's state while it is written.
5. ``detach``; ``sparsity``/``table``/``summary`` report; ``state_dict``/``set_state_dict`` save and restore.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import paddle

from ._validation import check_bool, check_choice, check_fraction, check_threshold
from .accumulate import SquaredGradients
from .criteria import CRITERIA
from .masks import MASK_DTYPES, Mask, UndoPositions, all_finite, count_nonzero, newly_pruned, resolve_mask_dtype
from .parameters import ParameterSpec, check_parameter_spec, resolve_parameters
from .patterns import PatternSpec, check_pattern
from .scores import ScoreSource, nonzero

SCOPES = ("global", "layer")
_HISTOGRAM_SAMPLE = 1 << 16


def require_dynamic_mode() -> None:
    if not paddle.in_dynamic_mode():
        raise RuntimeError("paddle_prune_callback works in dynamic graph mode only, but static graph mode is "
                           "on (paddle.enable_static() was called); call paddle.disable_static() first.")


class Pruner:
    """Pruning of a network's parameters, driven by a training loop.

    Args:
        network (paddle.nn.Layer): the model to prune.
        criterion (str, optional): ``"magnitude"`` (|w|), ``"gradient"`` (mean g²), ``"fisher"``
            (½·mean(g²)·w²) or ``"hybrid"`` (w²·sqrt(mean g²)). Default: ``"hybrid"``, chosen by measurement
            (``docs/accuracy.md``).
        scope (str, optional): ``"global"`` ranks the scores of all pruned parameters together;
            ``"layer"`` prunes every parameter to the same sparsity. Default: ``"global"``.
        parameters (list[str]|callable, optional): names or fnmatch patterns of the parameters to prune,
            or a callable ``(name, param) -> bool``. Default: None, every trainable parameter with
            ``ndim >= 2`` outside normalization layers and sparse embeddings.
        pattern (str|Pattern, optional): which weights compete: ``"unstructured"`` (any weight), or a
            :class:`~paddle_prune_callback.patterns.Pattern`; ``"channel"`` prunes whole channel groups
            (see :mod:`~paddle_prune_callback.channel_pattern`); ``"N:M"`` such as ``"2:4"`` keeps at most N
            non-zeros in every group of M along the input dimension, in ``paddle.incubate.asp``'s layout
            (see :class:`~paddle_prune_callback.nm.NMPattern`). Default: ``"unstructured"``.
        example_inputs (paddle.Tensor|list, optional): a batch of inputs (or ``InputSpec`` objects) that
            ``pattern="channel"`` traces the network with. Default: None.
        mask_dtype (str, optional): ``"bool"`` (1 byte per weight, applied with ``masked_fill_``),
            ``"float"`` (the parameter's dtype, applied with ``multiply_``) or ``"auto"``: ``"float"`` for
            float32/float64 parameters on CPU, where it is faster, ``"bool"`` otherwise. Default: ``"auto"``.
        hold_zeros (bool, optional): at :meth:`attach`, mask the weights that are exactly zero (a pruned
            checkpoint's zeros): counted as pruned, never revived, their optimizer state zeroed. Default:
            False (zero-initialised layers must be free to grow).

    Raises:
        RuntimeError: in static graph mode.
        ValueError, TypeError: for a bad argument, a pattern that matches nothing, a network with no
            prunable parameter, a non-floating parameter or a sparse embedding. Nothing is changed before
            these checks.
    """

    def __init__(self, network: paddle.nn.Layer, criterion: str = "hybrid", scope: str = "global",
                 parameters: ParameterSpec = None, pattern: PatternSpec = "unstructured", example_inputs=None,
                 mask_dtype: str = "auto", hold_zeros: bool = False):
        self.criterion = CRITERIA[check_choice("criterion", criterion, tuple(CRITERIA))]
        self.scope = check_choice("scope", scope, SCOPES)
        self.pattern = check_pattern(pattern, scope=self.scope)
        self.mask_dtype = check_choice("mask_dtype", mask_dtype, MASK_DTYPES)
        self.hold_zeros = check_bool("hold_zeros", hold_zeros)
        if example_inputs is not None:
            self.pattern = self.pattern.with_example_inputs(example_inputs)
        require_dynamic_mode()
        self.network = network
        spec = check_parameter_spec(parameters)
        self.plan = self.pattern.plan(network, resolve_parameters(network, spec), explicit=spec is not None)
        if not self.plan.parameters:
            raise ValueError(f"pattern {self.pattern.name!r} leaves every selected parameter dense: " +
                             "; ".join(f"{n}: {why}" for n, why in self.plan.dense.items()))
        self.parameters: Dict[str, paddle.Tensor] = self.plan.parameters
        self._masks: Dict[str, Mask] = {}
        self._g2 = SquaredGradients(self.criterion.name)
        self.last_scores: Optional[np.ndarray] = None   # a sample of the alive weights' scores at the last prune
        self._handles: Dict[str, object] = {}
        self._attached = False
        self._optimizer = None

    @property
    def keep(self) -> Dict[str, np.ndarray]:
        """Each pruned parameter's keep-mask as a flat numpy bool array, copied from the device on each access."""
        return {n: m.keep().numpy().reshape(-1) for n, m in self._masks.items()}

    @property
    def num_batches(self) -> int:
        """Batches counted in the mean of g² since the last prune."""
        return self._g2.num_batches

    @num_batches.setter
    def num_batches(self, value: int) -> None:
        self._g2.num_batches = value

    @property
    def skipped_batches(self) -> int:
        """Batches left out of the mean of g² because AMP found non-finite gradients."""
        return self._g2.skipped_batches

    @property
    def _sq_grads(self) -> Dict[str, paddle.Tensor]:
        return self._g2.sums

    # ------------------------------------------------------------------ training-loop hooks
    def attach(self, optimizer: Optional[paddle.optimizer.Optimizer] = None, scaler=None) -> "Pruner":
        """Register the gradient hooks and re-apply the masks; call before training.

        Args:
            optimizer (paddle.optimizer.Optimizer, optional): its moment accumulators of newly pruned
                weights are zeroed at each prune, and its fp32 master weights (AMP O2) are masked.
            scaler (paddle.amp.GradScaler|callable, optional): the loss scaler, or a callable returning it
                (``paddle.Model`` creates its scaler at the first batch). Under an enabled scaler, gradients
                are divided by the loss scale before squaring, and batches with non-finite gradients are
                left out of the scores.
        """
        self.detach()
        self._optimizer = optimizer
        self._g2.scaler_source = scaler
        self._attached = True
        for name, p in self.parameters.items():
            if self.criterion.needs_gradients:
                self._g2.ensure(name, p.shape)
            self._ensure_hook(name)
        if self.hold_zeros:
            with paddle.no_grad():
                self._apply({n: nonzero(p) for n, p in self.parameters.items()})
        self.reapply()
        return self

    def detach(self) -> None:
        """Remove the gradient hooks. Masks and accumulated scores are kept."""
        for handle in self._handles.values():
            handle.remove()
        self._handles = {}
        self._g2.drop_pending()
        self._attached = False

    def _ensure_hook(self, name: str) -> None:
        # Magnitude pruning needs no gradients: its hooks only mask, so they wait for the first mask.
        needed = self.criterion.needs_gradients or name in self._masks
        if self._attached and needed and name not in self._handles:
            self._handles[name] = self.parameters[name].register_hook(self._make_hook(name))

    def _make_hook(self, name: str):
        add = self._g2.adder(name) if self.criterion.needs_gradients else None
        masks = self._masks

        def hook(grad: paddle.Tensor):
            try:
                with paddle.no_grad():
                    if add is not None:
                        add(grad)
                    mask = masks.get(name)
                    return mask.masked(grad) if mask is not None else grad
            except BaseException:
                self.detach()     # the model trains normally after the error
                raise

        return hook

    def reapply(self) -> None:
        """Zero the pruned weights again (and AMP master weights): after loading dense weights, say."""
        with paddle.no_grad():
            master = getattr(self._optimizer, "_master_weights", None) or {}
            for name, mask in self._masks.items():
                p = self.parameters[name]
                mask.apply_(p)
                if p.name in master:
                    mask.apply_(master[p.name])

    def step(self, batches: int = 1) -> None:
        """Call after every optimizer update: re-applies the masks so pruned weights stay exactly zero,
        and counts the update's batches in the mean of g².

        Args:
            batches (int, optional): how many backward passes this update's gradient accumulated
                (``accumulate_grad_batches``, ``gradient_accumulation_steps``); each one's g² was added by
                the hooks, so each counts in the mean. Under AMP the update's batches are kept, or left
                out together when one of them overflowed, as the ``GradScaler`` skips the whole update.
                Default: 1.
        """
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"`batches` must be an integer >= 1 (the backward passes of this update), "
                             f"got {batches!r}.")
        self.reapply()
        self._g2.commit(batches)

    # ------------------------------------------------------------------ pruning
    def mean_sq_grads(self) -> Dict[str, np.ndarray]:
        """The mean of g² per parameter since the last prune.

        Under data parallel (world size > 1) the hooks see each rank's LOCAL gradient, before the
        all-reduce: the result is the mean over ranks of each rank's mean g² of its local batch
        gradients, identical on every rank. With equal batch counts per rank (``DistributedBatchSampler``)
        that is the mean of g² over all ranks' batches, each gradient taken over one rank's batch. It
        is one all-reduce of all accumulators in one buffer, so every rank must call it (``prune`` does);
        a single process makes no collective.
        """
        return {n: m.numpy().reshape(-1) for n, m in self._checked_mean_sq_grads().items()}

    def _checked_mean_sq_grads(self) -> Dict[str, paddle.Tensor]:
        """:meth:`mean_sq_grads` as tensors in the parameters' shapes, or the error why there are none."""
        return self._g2.checked_means() if self.criterion.needs_gradients else {}

    def prune(self, sparsity: Optional[float] = None, *, threshold: Optional[float] = None) -> Dict[str, float]:
        """Prune to a cumulative ``sparsity``, or every weight whose score is below ``threshold``.

        Pruned weights are never revived, weights that are exactly zero count as pruned, and every
        parameter keeps at least its highest-scoring weight. All of it happens or none: if an update
        fails, weights, optimizer state and masks are left as they were. Returns the measured sparsity
        (see :meth:`sparsity`). The squared-gradient accumulators restart.
        """
        if (sparsity is None) == (threshold is None):
            raise ValueError("pass exactly one of `sparsity` and `threshold` to prune().")
        if sparsity is not None:
            sparsity = check_fraction("sparsity", sparsity)
        else:
            threshold = check_threshold(threshold)
        self.pattern.check_options(scope=self.scope, threshold=threshold)
        # Scores are computed per parameter when the selection asks for them, from the weights and the g²
        # sums on the parameter's device, so that no copy of all scores is ever held.
        single = paddle.distributed.get_world_size() == 1
        if single and self.criterion.needs_gradients and self.num_batches > 0 and self._g2.sums:
            sq_grads, count = dict(self._g2.sums), self.num_batches
        else:
            sq_grads, count = self._checked_mean_sq_grads(), 1   # {} for magnitude; all-reduces; or raises
        with paddle.no_grad():
            for n, p in self.parameters.items():
                for what, t in (("weights", p), ("mean squared gradients", sq_grads.get(n))):
                    if t is not None and not all_finite(t):
                        raise FloatingPointError(f"parameter {n!r} has non-finite {what}; training has diverged, "
                                                 f"nothing was pruned.")
        scores = ScoreSource(self.criterion, self.parameters, self._masks, sq_grads, count)
        self.last_scores = self._sample_alive_scores(scores)
        self._apply(self.pattern.select(scores, sparsity=sparsity, threshold=threshold, scope=self.scope))
        self._g2.restart()
        return self.sparsity()

    def _sample_alive_scores(self, scores: ScoreSource) -> np.ndarray:
        """A sample of the scores of the weights alive before this prune, for histograms."""
        rng = np.random.default_rng(0)
        total = sum(scores.size(n) for n in scores.names)
        parts = []
        for n in scores.names:
            size, p = scores.size(n), self.parameters[n]
            idx = paddle.to_tensor(rng.integers(0, size, size=max(1, round(_HISTOGRAM_SAMPLE * size / total))),
                                   dtype="int64", place=p.place)
            s = scores.sample(n, idx)
            parts.append(paddle.masked_select(s, s >= 0).numpy())   # pruned and zero weights score -1
        return np.concatenate(parts)

    def _apply(self, new_keeps: Dict[str, paddle.Tensor]) -> None:
        """AND each keep-mask with the parameter's old one and apply those that prune something new: to
        the weights, the optimizer state and the masks, one parameter at a time, all of them or, if an
        update fails, none (the old values of the newly pruned positions are restored, and the old masks
        rebuilt from the new ones). Consumes ``new_keeps``. Until the event completes it holds the old
        values of the newly pruned positions (of the weights and their optimizer state) and, for a
        parameter that had a mask, those positions as bools: the price of an all-or-nothing prune. On CPU
        all of it runs in numpy on zero-copy views of the tensors."""
        undo, changed = [], []   # (UndoPositions, tensor index, old values); (name, had a mask, newly pruned)
        with paddle.no_grad():
            try:
                for name in list(new_keeps):
                    keep = new_keeps.pop(name)    # each keep-mask is freed once its Mask is built
                    old = self._masks.get(name)
                    keep, newly = newly_pruned(keep, old)   # `keep` ANDed with the old keep-mask
                    if newly is False:
                        continue
                    p = self.parameters[name]
                    mask = Mask.from_keep_(keep, resolve_mask_dtype(self.mask_dtype, p), p.dtype)
                    del keep
                    changed.append((name, old is not None, newly))
                    self._masks[name] = mask
                    # A first mask's newly pruned positions are all it prunes: not held twice.
                    positions = UndoPositions(newly, mask, [p] + self._optimizer_state(p))
                    for i, t in enumerate(positions.tensors):
                        undo.append((positions, i, positions.take(i)))
                        mask_in_place(mask, t)
            except BaseException:
                for positions, i, values in reversed(undo):
                    positions.put(i, values)
                for name, had_mask, newly in changed:
                    mask = self._masks.pop(name)
                    if had_mask:
                        p = self.parameters[name]
                        if isinstance(newly, np.ndarray):
                            newly = paddle.to_tensor(newly.reshape(p.shape), place=p.place)
                        self._masks[name] = Mask(paddle.logical_or(mask.keep(), newly), mask.kind, p.dtype)
                raise
        for name, _, _ in changed:
            self._ensure_hook(name)

    def _optimizer_state(self, p: paddle.Tensor) -> list:
        """The optimizer's tensors of ``p``'s shape kept for it: moments, velocity, AMP master weights."""
        opt = self._optimizer
        if opt is None:
            return []
        states = [per_param[p.name] for per_param in getattr(opt, "_accumulators", {}).values()
                  if p.name in per_param]
        master = (getattr(opt, "_master_weights", None) or {}).get(p.name)
        return [t for t in states + ([master] if master is not None else []) if list(t.shape) == list(p.shape)]

    # ------------------------------------------------------------------ reporting
    def _zeros(self, p: paddle.Tensor) -> int:
        # Counted on the parameter's device (on CPU, on a zero-copy view); -0.0 is a zero.
        return int(p.size) - count_nonzero(p)

    def sparsity(self) -> Dict[str, float]:
        """Fraction of exact zeros in each managed parameter, counted from the weights, and ``"global"``
        over all of them together."""
        out, zeros, total = {}, 0, 0
        for name, p in self.parameters.items():
            z, size = self._zeros(p), int(p.size)
            out[name] = z / size
            zeros, total = zeros + z, total + size
        out["global"] = zeros / total
        return out

    def surviving_weights(self, size: int = _HISTOGRAM_SAMPLE) -> np.ndarray:
        """A random sample (about ``size`` values) of the non-zero weights, for histograms."""
        rng = np.random.default_rng(0)
        total = sum(int(p.size) for p in self.parameters.values())
        parts = []
        with paddle.no_grad():
            for p in self.parameters.values():
                n = int(p.size)
                idx = paddle.to_tensor(rng.integers(0, n, size=max(1, round(size * n / total))), dtype="int64",
                                       place=p.place)
                sample = paddle.gather(p.flatten().astype("float32"), idx)
                parts.append(paddle.masked_select(sample, nonzero(sample)).numpy())
        return np.concatenate(parts)

    def table(self) -> list[tuple[str, tuple, int, int, float]]:
        """One row per managed parameter: (name, shape, weights, zeros, sparsity), from the weights."""
        rows = []
        for name, p in self.parameters.items():
            z, size = self._zeros(p), int(p.size)
            rows.append((name, tuple(p.shape), size, z, z / size))
        return rows

    def summary(self) -> list[str]:
        """The pattern's lines for the train-end summary (e.g. parameters left dense, and why)."""
        return self.pattern.summary(self)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Masks, squared-gradient accumulators, the batch count, the criterion and the pruned parameters'
        shapes, as plain numpy arrays (saved with ``np.savez``, loaded without pickle)."""
        state = {"num_batches": np.asarray(self.num_batches, dtype=np.int64),
                 "criterion": np.asarray(self.criterion.name), "pattern": np.asarray(self.pattern.name)}
        for name, p in self.parameters.items():
            state[f"shape/{name}"] = np.asarray(p.shape, dtype=np.int64)
        state.update({f"keep/{name}": keep for name, keep in self.keep.items()})  # host copies while written
        state.update({f"sq_grad/{name}": acc for name, acc in self._g2.sums_to_save().items()})
        return state

    def check_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Raise ``ValueError`` naming the mismatch if ``state`` does not fit this engine; changes nothing."""
        saved = str(state["criterion"]) if "criterion" in state else None
        if saved != self.criterion.name:
            raise ValueError(f"saved state is for criterion {saved!r}, but this pruner uses "
                             f"{self.criterion.name!r}; pass criterion={saved!r}.")
        saved = str(state["pattern"]) if "pattern" in state else "unstructured"
        if saved != self.pattern.name:
            raise ValueError(f"saved state is for pattern {saved!r}, but this pruner uses "
                             f"{self.pattern.name!r}; pass pattern={saved!r}.")
        shapes = {k.partition("/")[2]: tuple(int(d) for d in v) for k, v in state.items() if k.startswith("shape/")}
        ours = {n: tuple(p.shape) for n, p in self.parameters.items()}
        if set(shapes) != set(ours):
            raise ValueError(f"saved state prunes parameters {sorted(shapes)}, but this network's pruned "
                             f"parameters are {sorted(ours)}; it was saved from another model or another "
                             f"`parameters` selection.")
        wrong = {n: (shapes[n], ours[n]) for n in ours if shapes[n] != ours[n]}
        if wrong:
            raise ValueError("saved state has other shapes (saved, here): " +
                             ", ".join(f"{n}: {a} vs {b}" for n, (a, b) in wrong.items()))
        for key, value in state.items():
            kind, _, name = key.partition("/")
            if kind not in ("keep", "sq_grad"):
                continue
            if name not in ours:
                raise ValueError(f"saved state has {kind} for parameter {name!r}, which this network does not "
                                 f"prune (it prunes {list(ours)}).")
            expected = (int(np.prod(ours[name])),) if kind == "keep" else ours[name]
            if tuple(value.shape) != expected:
                raise ValueError(f"saved {kind} for parameter {name!r} has shape {tuple(value.shape)}, but the "
                                 f"parameter needs {expected}.")
            if kind == "keep" and value.dtype != np.bool_:
                raise ValueError(f"saved mask of parameter {name!r} has dtype {value.dtype}, expected bool.")
            if kind == "sq_grad" and not np.isfinite(value).all():
                raise ValueError(f"saved squared gradients of parameter {name!r} are not finite.")
        if self.criterion.needs_gradients:
            missing = sorted(n for n in ours if f"sq_grad/{n}" not in state)
            if missing:
                raise ValueError(f"saved state lacks squared gradients for parameters {missing}.")

    def set_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`, after checking it fits this network; applies the masks at once.

        Everything is checked first (:meth:`check_state_dict`): a mismatch raises ``ValueError`` and
        leaves the network and the engine as they were.
        """
        self.check_state_dict(state)
        keeps = {k.partition("/")[2]: v for k, v in state.items() if k.startswith("keep/")}
        sq_grads = {k.partition("/")[2]: v for k, v in state.items() if k.startswith("sq_grad/")}
        self._masks.clear()
        self._apply({n: paddle.to_tensor(np.asarray(k, dtype=bool).reshape(self.parameters[n].shape),
                                         place=self.parameters[n].place) for n, k in keeps.items()})
        for name, value in sq_grads.items():
            self._g2.load(name, value, self.parameters[name].shape)
        self.num_batches = int(state.get("num_batches", 0))


def mask_in_place(mask: Mask, t: paddle.Tensor) -> None:
    """Zero ``t`` where ``mask`` prunes, in place (a module-level function, so that a test can make it fail)."""
    mask.apply_(t)


