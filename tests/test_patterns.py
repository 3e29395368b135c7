"""The `pattern` argument and the Pattern interface: validation before anything changes, a pattern that
extends the managed parameters and leaves some dense, group selection from on-demand scores, summary lines."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import MLP, classification_data

from paddle_prune_callback import PruningCallback, Pruner
from paddle_prune_callback.patterns import Pattern, Plan, Unstructured, make_pattern
from paddle_prune_callback.scores import PRUNED_SCORE


class OutputColumns(Pattern):
    """A test pattern: prunes whole output columns of ``fc1.weight`` ([in, out]) together with the matching
    entries of ``fc1.bias`` (coupled), by the column's summed weight scores; leaves ``fc2.weight`` dense."""

    name = "columns"

    def __init__(self):
        self.seen_scores = []

    def check_options(self, *, scope, threshold=None, target_sparsity=None):
        if threshold is not None:
            raise ValueError(f"pattern 'columns' cannot use `threshold` ({threshold!r}); pass target_sparsity.")

    def plan(self, network, selected, explicit):
        params = {n: p for n, p in selected.items() if n == "fc1.weight"}
        params["fc1.bias"] = network.fc1.bias
        dense = {n: "not a column of fc1" for n in selected if n != "fc1.weight"}
        return Plan(params, dense=dense, coupled={"fc1.bias": "bias of fc1's output columns"})

    def select(self, scores, *, sparsity=None, threshold=None, scope="global"):
        s = scores.scores("fc1.weight")
        self.seen_scores.append(s.numpy())
        assert s.dtype == paddle.float32 and tuple(s.shape) == scores.shape("fc1.weight")
        column = s.sum(axis=0)
        k = round(sparsity * column.shape[0])
        rank = paddle.argsort(paddle.argsort(column, stable=True), stable=True)
        keep = rank >= k
        return {"fc1.weight": keep.unsqueeze(0).expand(scores.shape("fc1.weight")), "fc1.bias": keep}

    def summary(self, pruner):
        return super().summary(pruner) + [f"columns pruned: {int((pruner.parameters['fc1.bias'] == 0).sum())}"]


def test_make_pattern():
    assert isinstance(make_pattern("unstructured"), Unstructured)
    custom = OutputColumns()
    assert make_pattern(custom) is custom
    with pytest.raises(ValueError, match=r"`pattern` must be one of \[.*'unstructured'.*\], got 'diagonal'"):
        make_pattern("diagonal")
    with pytest.raises(TypeError, match=r"`pattern` must be a string such as 'unstructured', or a Pattern; got 3"):
        make_pattern(3)


def test_bad_pattern_argument_fails_before_anything_changes():
    net = MLP()
    before = [p.numpy().copy() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"`pattern` must be one of .* got 'unstructured2'"):
        PruningCallback(0.5, [0], pattern="unstructured2")
    with pytest.raises(ValueError, match=r"`pattern` must be one of .* got 'nope'"):
        Pruner(net, pattern="nope")
    with pytest.raises(ValueError, match=r"pattern 'columns' cannot use `threshold` \(0.1\)"):
        PruningCallback(threshold=0.1, prune_epochs=[0], pattern=OutputColumns())
    pruner = Pruner(net, criterion="magnitude", pattern=OutputColumns())
    with pytest.raises(ValueError, match=r"pattern 'columns' cannot use `threshold` \(0.5\)"):
        pruner.prune(threshold=0.5)
    for p, w in zip(net.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), w)


def test_pattern_leaving_everything_dense_is_refused():
    class NothingFits(Unstructured):
        name = "nothing"

        def plan(self, network, selected, explicit):
            return Plan({}, dense={n: "too small" for n in selected})

    with pytest.raises(ValueError, match=r"pattern 'nothing' leaves every selected parameter dense: "
                                         r"fc1.weight: too small; fc2.weight: too small"):
        Pruner(MLP(), pattern=NothingFits())


def test_unstructured_by_name_equals_the_default():
    a, b = MLP(), MLP()
    b.set_state_dict(a.state_dict())
    Pruner(a, criterion="magnitude").prune(sparsity=0.6)
    Pruner(b, criterion="magnitude", pattern="unstructured").prune(sparsity=0.6)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_group_pattern_with_coupled_parameter_through_fit(capsys):
    """Columns of fc1.weight and fc1.bias pruned together, held through AdamW with weight decay; fc2 left
    dense; already-pruned weights reach the pattern at PRUNED_SCORE; the summary has the pattern's lines."""
    net = MLP()
    model = paddle.Model(net)
    opt = paddle.optimizer.AdamW(0.05, parameters=net.parameters(), weight_decay=0.1)
    model.prepare(opt, paddle.nn.CrossEntropyLoss())
    fc2_before = net.fc2.weight.numpy().copy()
    pattern = OutputColumns()
    cb = PruningCallback(0.5, prune_epochs=[0, 1], schedule="linear", criterion="fisher", pattern=pattern)
    model.fit(classification_data(), epochs=3, batch_size=32, verbose=0, callbacks=[cb])

    pruner = cb.pruner
    assert list(pruner.parameters) == ["fc1.weight", "fc1.bias"]
    assert pruner.plan.dense == {"fc2.weight": "not a column of fc1"}
    assert set(pruner._sq_grads) == {"fc1.weight", "fc1.bias"}          # the coupled bias is scored and hooked
    w, b = net.fc1.weight.numpy(), net.fc1.bias.numpy()
    pruned_columns = np.flatnonzero(~pruner.keep["fc1.bias"])
    assert pruned_columns.size == 8                                       # 50 % of 16 columns
    assert (w[:, pruned_columns] == 0).all() and (b[pruned_columns] == 0).all()
    alive = np.setdiff1d(np.arange(16), pruned_columns)
    assert np.count_nonzero(w[:, alive]) == w[:, alive].size and np.count_nonzero(b[alive]) == alive.size
    for acc in ("moment1", "moment2"):
        state = opt._accumulators[acc]
        assert (state[net.fc1.bias.name].numpy()[pruned_columns] == 0).all()
    assert not np.array_equal(net.fc2.weight.numpy(), fc2_before) and np.count_nonzero(net.fc2.weight.numpy()) == 64
    assert cb.sparsity()["fc1.bias"] == 0.5 and cb.sparsity()["global"] == pytest.approx(0.5)

    # At the second event the 4 columns pruned at the first reach the pattern at PRUNED_SCORE, the rest >= 0.
    first, second = pattern.seen_scores
    assert (first >= 0).all()
    first_pruned = np.sort(np.argsort(first.sum(axis=0), kind="stable")[:4])
    marked = np.flatnonzero((second == PRUNED_SCORE).all(axis=0))
    np.testing.assert_array_equal(marked, first_pruned)
    assert (second[:, np.setdiff1d(np.arange(16), marked)] >= 0).all()
    assert set(first_pruned) <= set(pruned_columns)
    out = capsys.readouterr().out
    assert "left dense: fc2.weight (not a column of fc1)" in out and "columns pruned: 8" in out
