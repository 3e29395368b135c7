"""``pattern="N:M"`` through ``Model.fit``: ASP accepts the result, counts are gradual, masks hold, bad input."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle.incubate import asp

from paddle_prune_callback import PruningCallback, PruningSchedule, Pruner


class Mixed(paddle.nn.Layer):
    """Every layer kind the N:M pattern meets: Linear, Conv1D/2D/3D, a Linear with 3 inputs (< M), an
    Embedding and a transposed conv (neither has an N:M layout)."""

    def __init__(self):
        super().__init__()
        self.emb = paddle.nn.Embedding(10, 6)
        self.conv1d = paddle.nn.Conv1D(6, 8, 3, padding=1)
        self.conv2d = paddle.nn.Conv2D(8, 12, 3, padding=1)
        self.deconv = paddle.nn.Conv2DTranspose(12, 6, 3, padding=1)
        self.conv3d = paddle.nn.Conv3D(6, 8, (1, 3, 3), padding=(0, 1, 1))
        self.fc = paddle.nn.Linear(8 * 4 * 4, 18)          # 128 inputs
        self.narrow = paddle.nn.Linear(3, 4)               # input dim 3 < 4: left dense
        self.head = paddle.nn.Linear(18 + 4, 3)            # 22 inputs: a partial last group of 2

    def forward(self, tokens, extra):
        x = self.conv1d(self.emb(tokens).transpose([0, 2, 1]))                       # [B, 8, 16]
        x = paddle.nn.functional.relu(self.conv2d(x.reshape([-1, 8, 4, 4])))        # [B, 12, 4, 4]
        x = self.conv3d(self.deconv(x).unsqueeze(2)).squeeze(2)                     # [B, 8, 4, 4]
        x = paddle.concat([paddle.nn.functional.relu(self.fc(x.flatten(1))), self.narrow(extra)], axis=1)
        return self.head(x)


PRUNED_2D = {"conv2d.weight": 1, "fc.weight": 0, "head.weight": 0}        # ASP checks these (Linear, Conv2D)
PRUNED_OTHER = {"conv1d.weight": 1, "conv3d.weight": 1}                   # counted independently
LEFT_OUT = ("emb.weight", "deconv.weight", "narrow.weight")


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 10, size=(n, 16)).astype("int64")
    extra = rng.standard_normal((n, 3)).astype("float32")
    y = (tokens[:, 0] % 3).astype("int64")[:, None]
    return paddle.io.TensorDataset([paddle.to_tensor(tokens), paddle.to_tensor(extra), paddle.to_tensor(y)])


def fit(callbacks, epochs=5, optimizer=None):
    net = Mixed()
    model = paddle.Model(net)
    opt = optimizer(net) if optimizer else paddle.optimizer.AdamW(1e-2, parameters=net.parameters(),
                                                                   weight_decay=0.1)
    model.prepare(opt, paddle.nn.CrossEntropyLoss())
    model.fit(data(), epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
    return net


def zeros_per_group(w: np.ndarray, axis: int, m: int = 4) -> np.ndarray:
    """Zeros in each group of m along axis, the partial last group padded with zeros (numpy only)."""
    moved = np.moveaxis(w, axis, -1)
    padded = np.zeros(moved.shape[:-1] + (moved.shape[-1] + (-moved.shape[-1] % m),), dtype=w.dtype)
    padded[..., :moved.shape[-1]] = moved
    return m - np.count_nonzero(padded.reshape(-1, m), axis=1)


def expected_zeros(shape, axis, n=2, m=4) -> int:
    """Zeros of an N:M weight: M-N per full group; a partial group of r weights is padded by m-r zeros."""
    length, others = shape[axis], int(np.prod(shape)) // shape[axis]
    partial = length % m
    return others * ((length // m) * (m - n) + (max(0, (m - n) - (m - partial)) if partial else 0))


def weights(net) -> dict:
    return {n: p.numpy() for n, p in net.named_parameters()}


class GroupZeros(paddle.callbacks.Callback):
    """After each epoch (the pruning callback before it in the list has pruned), the fewest and the most
    zeros in a full group of 4 (partial groups have padding) over every pruned weight."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        w = weights(self.model.network)
        full = {n: np.take(w[n], range(w[n].shape[a] // 4 * 4), axis=a) for n, a in {**PRUNED_2D, **PRUNED_OTHER}.items()}
        counts = [zeros_per_group(full[n], axis) for n, axis in {**PRUNED_2D, **PRUNED_OTHER}.items()]
        self.seen.append((min(int(c.min()) for c in counts), max(int(c.max()) for c in counts)))


@pytest.mark.parametrize("criterion", ["magnitude", "fisher"])
def test_two_four_through_fit_is_what_asp_checks_and_keeps(criterion):
    cb = PruningCallback(pattern="2:4", criterion=criterion, prune_epochs=[0, 1, 2], verbose=0)
    net = fit([cb])
    w = weights(net)
    for name, axis in PRUNED_2D.items():
        assert asp.check_sparsity(w[name].T, n=2, m=4, func_name=asp.CheckMethod.CHECK_1D), name
    for name, axis in {**PRUNED_2D, **PRUNED_OTHER}.items():
        assert (zeros_per_group(w[name], axis) == 2).all(), name        # padding of partial groups included
    assert zeros_per_group(w["head.weight"], 0).size == 6 * 3        # 22 inputs: 5 full groups and a padded one
    for name in LEFT_OUT:
        assert np.count_nonzero(w[name]) == w[name].size, name
    assert set(cb.pruner.parameters) == set(PRUNED_2D) | set(PRUNED_OTHER)
    expected = sum(expected_zeros(w[n].shape, a) for n, a in {**PRUNED_2D, **PRUNED_OTHER}.items())
    assert cb.sparsity()["global"] == expected / sum(w[n].size for n in cb.pruner.parameters) < 0.5
    # ASP's own 2:4 pass finds nothing left to prune
    asp.prune_model(net, n=2, m=4, mask_algo="mask_1d", with_mask=False)
    after = weights(net)
    for name, value in w.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_group_counts_are_gradual_never_decreasing_and_exact_at_the_last_event():
    recorder = GroupZeros()
    cb = PruningCallback(pattern="2:4", criterion="magnitude", prune_epochs=[0, 1, 2, 3], schedule="linear",
                         verbose=0)
    fit([cb, recorder], epochs=6)
    schedule = PruningSchedule(0.5, [0, 1, 2, 3], "linear")
    expected = [int(np.floor(schedule(e)[1] * 4 + 0.5)) for e in range(4)]     # 0.125, 0.25, ... -> 1, 1, 2, 2
    assert expected == [1, 1, 2, 2]
    assert [lo for lo, _ in recorder.seen[:4]] == expected
    assert [hi for _, hi in recorder.seen[:4]] == expected
    assert recorder.seen[4:] == [(2, 2), (2, 2)]                              # held through AdamW's decay


def test_pattern_holds_after_more_adamw_updates_with_weight_decay():
    cb = PruningCallback(pattern="2:4", criterion="fisher", prune_epochs=[0], verbose=0)
    net = fit([cb], epochs=4, optimizer=lambda n: paddle.optimizer.AdamW(5e-2, parameters=n.parameters(),
                                                                        weight_decay=0.5))
    w = weights(net)
    for name, axis in {**PRUNED_2D, **PRUNED_OTHER}.items():
        assert (zeros_per_group(w[name], axis) >= 2).all(), name
    summary = "\n".join(cb.pruner.pattern.summary(cb.pruner))
    assert "groups meeting 2:4: " in summary
    total = sum(zeros_per_group(w[n], a).size for n, a in {**PRUNED_2D, **PRUNED_OTHER}.items())
    assert f"groups meeting 2:4: {total:,} of {total:,}" in summary
    assert "left dense: narrow.weight (input dimension 3 < 4)" in summary


def test_other_n_m_and_the_engine_directly():
    net = Mixed()
    for spec, zeros in (("1:4", 3), ("4:8", 4)):
        pruner = Pruner(net, criterion="magnitude", pattern=spec)
        pruner.prune(sparsity=pruner.pattern.default_sparsity())
        m = int(spec.split(":")[1])
        for name, axis in {**PRUNED_2D, **PRUNED_OTHER}.items():
            if dict(net.named_parameters())[name].shape[axis] >= m:
                assert (zeros_per_group(dict(net.named_parameters())[name].numpy(), axis, m) >= zeros).all()


def test_resume_keeps_the_pattern(tmp_path):
    cb = PruningCallback(pattern="2:4", criterion="fisher", prune_epochs=[0, 1], state_dir=str(tmp_path), verbose=0)
    net = fit([cb], epochs=2)
    fresh = Mixed()
    model = paddle.Model(fresh)
    model.prepare(paddle.optimizer.AdamW(1e-2, parameters=fresh.parameters(), weight_decay=0.1),
                  paddle.nn.CrossEntropyLoss())
    resumed = PruningCallback.resume(str(tmp_path), model, verbose=0)
    assert resumed.pattern.name == "2:4" and resumed.target_sparsity == 0.5
    for name, value in weights(net).items():
        np.testing.assert_array_equal(weights(fresh)[name], value, err_msg=name)
    model.fit(data(), epochs=1, batch_size=32, verbose=0, callbacks=[resumed])
    w = weights(fresh)
    for name, axis in {**PRUNED_2D, **PRUNED_OTHER}.items():
        assert (zeros_per_group(w[name], axis) == 2).all(), name


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=0.1), r"`threshold` cannot be used with pattern='2:4', which keeps exactly 2 weights in every "
                          r"group of 4; leave `threshold` out \(the target is 0.5\)"),
    (dict(scope="layer"), r"`scope`='layer' has no meaning with pattern='2:4': every group of 4 gets the same number "
                          r"of zeros. Leave `scope` at its default."),
    (dict(target_sparsity=0.6), r"`target_sparsity`=0.6 contradicts pattern='2:4', whose sparsity is 1 - 2/4 = 0.5; "
                                r"leave `target_sparsity` out or pass 0.5."),
])
def test_options_an_n_m_pattern_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningCallback(pattern="2:4", prune_epochs=[0], **kwargs)


@pytest.mark.parametrize("pattern, match", [
    ("5:4", r"`pattern` '5:4' must keep between 1 and M-1 weights per group of M \(1 <= N < M\), e.g. '2:4'"),
    ("0:4", r"`pattern` '0:4' must keep between 1 and M-1 weights"),
    ("2:4:8", r"`pattern` must be one of \['unstructured', .*\"N:M \(e.g. '2:4'\)\".*\], got '2:4:8'"),
])
def test_malformed_n_m_strings(pattern, match):
    with pytest.raises(ValueError, match=match):
        PruningCallback(pattern=pattern, prune_epochs=[0])


@pytest.mark.parametrize("parameters, match", [
    (["emb.weight"], r"parameter 'emb.weight' cannot be pruned with pattern='2:4': an Embedding is a table lookup, "
                     r"not a matrix product: no N:M kernel runs it .* Leave it out of `parameters`."),
    (["fc.weight", "deconv.weight"], r"parameter 'deconv.weight' cannot be pruned with pattern='2:4': a transposed "
                                     r"convolution's weight \[in, out, \*kernel\] has no N:M layout"),
    (["fc.bias"], r"parameter 'fc.bias' cannot be pruned with pattern='2:4': it is not the weight of a Linear or "
                  r"Conv1D/2D/3D layer"),
    (["narrow.weight"], r"pattern '2:4' leaves every selected parameter dense: narrow.weight: input dimension 3 < 4"),
])
def test_parameters_an_n_m_pattern_refuses_change_nothing(parameters, match):
    net = Mixed()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.AdamW(1e-2, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    before = weights(net)
    with pytest.raises(ValueError, match=match):
        model.fit(data(), epochs=1, batch_size=32, verbose=0,
                  callbacks=[PruningCallback(pattern="2:4", prune_epochs=[0], parameters=parameters, verbose=0)])
    for name, value in weights(net).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_engine_refuses_a_threshold_and_lists_what_it_leaves_out():
    pruner = Pruner(Mixed(), criterion="magnitude", pattern="2:4")
    with pytest.raises(ValueError, match=r"`threshold` cannot be used with pattern='2:4'"):
        pruner.prune(threshold=0.1)
    assert pruner.sparsity()["global"] == 0.0
    assert pruner.plan.dense == {
        "emb.weight": "not selected: an Embedding is a table lookup, not a matrix product: no N:M kernel runs it "
                      "and it has no input dimension to group along",
        "deconv.weight": "not selected: a transposed convolution's weight [in, out, *kernel] has no N:M layout in "
                         "paddle.incubate.asp or on sparse tensor cores",
        "narrow.weight": "input dimension 3 < 4"}
    # dense weights: only the partial groups of 2 inputs (2 zeros of padding) meet 2:4
    counts = {n: zeros_per_group(p.numpy(), pruner.pattern.axes[n]) for n, p in pruner.parameters.items()}
    met = {n: int((c >= 2).sum()) for n, c in counts.items()}
    assert met == {"conv1d.weight": 8 * 3, "conv2d.weight": 0, "conv3d.weight": 8 * 9, "fc.weight": 0, "head.weight": 3}
    assert pruner.summary()[0] == (f"groups meeting 2:4: {sum(met.values())} of {sum(c.size for c in counts.values()):,} "
                                   f"(short: " + ", ".join(f"{n} {met[n]}/{c.size}" for n, c in counts.items()) + ")")
    assert pruner.summary()[1:] == [f"left dense: {n} ({why})" for n, why in pruner.plan.dense.items()]
