from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import MLP, GradientRecord, MaskProbe, classification_data

from paddle_prune_callback import PruningCallback, PruningSchedule


def fit(callbacks, epochs=4, optimizer="adam", net=None, **kwargs):
    net = net or MLP()
    model = paddle.Model(net)
    opt = {"adam": lambda: paddle.optimizer.Adam(0.01, parameters=net.parameters(), weight_decay=0.01),
           "momentum": lambda: paddle.optimizer.Momentum(0.05, parameters=net.parameters(), weight_decay=0.01)}
    model.prepare(opt[optimizer](), paddle.nn.CrossEntropyLoss())
    model.fit(classification_data(), epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks, **kwargs)
    return model


@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "fisher", "hybrid"])
@pytest.mark.parametrize("schedule", ["polynomial", "linear", "constant"])
def test_fit_reaches_each_scheduled_sparsity_at_the_configured_epochs(criterion, schedule):
    epochs, prune_epochs = 6, [1, 2, 4]
    cb = PruningCallback(0.8, prune_epochs, criterion=criterion, schedule=schedule, verbose=0)
    probe = MaskProbe(cb)
    fit([cb, probe], epochs=epochs, optimizer="momentum")
    assert probe.updates_checked == 4 * 4     # every batch of the epochs after the first prune
    expected, current = [], 0
    for epoch in range(epochs):
        should, target = PruningSchedule(0.8, prune_epochs, schedule)(epoch)
        current = round(target * 192) if should else current
        expected.append(current)
    assert probe.zeros == expected
    assert [h["sparsity"] for h in cb.history] == [z / 192 for z in expected]
    assert cb.sparsity()["global"] == pytest.approx(round(0.8 * 192) / 192)


def test_layer_scope_and_threshold_through_fit():
    cb = PruningCallback(0.5, [0], scope="layer", criterion="magnitude", verbose=0)
    fit([cb], epochs=2)
    assert cb.sparsity()["fc1.weight"] == 0.5 and cb.sparsity()["fc2.weight"] == 0.5

    threshold = 1e-6
    names = ["fc1.weight", "fc2.weight"]
    cb = PruningCallback(threshold=threshold, prune_epochs=[0, 1], criterion="fisher", verbose=0)
    record, probe = GradientRecord(names), MaskProbe(cb)
    fit([record, cb, probe], epochs=3)
    # the reference: at each pruning epoch, every weight still alive whose ½·mean(g²)·w² over that epoch
    # (from the test's own hooks) is below the threshold is pruned, but each parameter's best one
    before = {n: np.zeros(128 if n == "fc1.weight" else 64, dtype=bool) for n in names}
    pruned_now = 0
    for epoch in (0, 1):
        after = probe.pruned_at_epoch_end[epoch]
        for n, score in record.fisher(epoch).items():
            alive = ~before[n]
            below = alive & (score < threshold)
            below[np.flatnonzero(alive)[np.argmax(score[alive])]] = False
            clear = np.abs(score - threshold) > 1e-4 * threshold   # leave float32 rounding at the cut out
            np.testing.assert_array_equal(after[n][clear], (before[n] | below)[clear])
            assert np.count_nonzero(~clear & alive) <= 2
            pruned_now += int(np.count_nonzero(after[n] & ~before[n]))
        before = after
    assert 0 < pruned_now == probe.zeros[2] < 192
    assert probe.zeros[1] == probe.zeros[2]
    assert cb.history[-1]["target_sparsity"] is None


def test_default_prune_epochs_follow_the_first_fit():
    cb = PruningCallback(0.6, criterion="magnitude", verbose=0)
    probe = MaskProbe(cb)
    fit([cb, probe], epochs=4)
    assert cb.prune_epochs == (0, 1, 2)
    assert probe.zeros[2] == probe.zeros[3] == round(0.6 * 192) > probe.zeros[1] > probe.zeros[0] > 0
    assert probe.updates_checked == 3 * 4


def test_reused_callback_keeps_masks_and_counts_epochs_across_fits():
    net = MLP()
    cb = PruningCallback(0.75, [0, 1], criterion="fisher", schedule="linear", verbose=0)
    probe = MaskProbe(cb)
    fit([cb, probe], epochs=2, net=net)
    assert probe.zeros == [round(0.375 * 192), round(0.75 * 192)]
    fit([cb, probe], epochs=2, net=net, optimizer="momentum")   # a fresh optimizer: masks still hold
    assert probe.zeros[2:] == [round(0.75 * 192)] * 2
    assert probe.updates_checked == 4 + 8
    assert [h["epoch"] for h in cb.history] == [0, 1, 2, 3]


def test_schedule_that_does_not_fit_in_the_fit_is_refused():
    cb = PruningCallback(0.75, [1, 3], verbose=0)
    with pytest.raises(ValueError, match=r"asks to prune at epoch\(s\) \[3\], but this fit ends at epoch 1"):
        fit([cb], epochs=2)


def test_verbose_prints_prune_events_and_a_summary(capsys):
    fit([PruningCallback(0.5, [0], criterion="magnitude", verbose=1)], epochs=1)
    out = capsys.readouterr().out
    assert "PruningCallback: epoch 0: sparsity 50.00% (target 50.00%, magnitude, global)" in out
    assert out.count("final global sparsity 50.00%") == 1
    assert "fc1.weight" in out and "8×16" in out


def test_verbose_zero_is_silent(capsys):
    fit([PruningCallback(0.5, [0], criterion="magnitude", verbose=0)], epochs=1)
    assert "PruningCallback" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(), ValueError, r"pass `target_sparsity` \(e.g. 0.9\) or `threshold`"),
        (dict(target_sparsity=0.5, threshold=0.1), ValueError, r"either `target_sparsity` \(0.5\) or `threshold` \(0.1\)"),
        (dict(target_sparsity=1.0), ValueError, r"`target_sparsity` must be in \[0, 1\), got 1.0"),
        (dict(target_sparsity=0.9, criterion="taylor"), ValueError, r"`criterion` must be one of \['magnitude', 'gradient', 'fisher', 'hybrid'\], got 'taylor'"),
        (dict(target_sparsity=0.9, scope="model"), ValueError, r"`scope` must be one of \['global', 'layer'\], got 'model'"),
        (dict(target_sparsity=0.9, schedule="exp"), ValueError, r"`schedule` must be one of"),
        (dict(target_sparsity=0.9, prune_epochs=[2, 1]), ValueError, r"increasing order"),
        (dict(target_sparsity=0.9, prune_epochs=[0], schedule=lambda k, n: 0.95), ValueError, r"above `target_sparsity`"),
        (dict(threshold=-1.0), ValueError, r"`threshold` must be a finite number > 0"),
        (dict(threshold="small"), TypeError, r"`threshold` must be a positive number, got 'small'"),
        (dict(target_sparsity=0.9, parameters="fc1.weight"), TypeError, r"wrap it in a list: \['fc1.weight'\]"),
        (dict(target_sparsity=0.9, parameters=[]), ValueError, r"empty list"),
        (dict(target_sparsity=0.9, log_dir=3), TypeError, r"`log_dir` must be a path or None, got 3"),
        (dict(target_sparsity=0.9, verbose=-1), ValueError, r"`verbose` must be 0"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningCallback(**kwargs)


def _fit_and_expect(cb, error, match, epochs=2, net=None):
    net = net or MLP()
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    with pytest.raises(error, match=match):
        fit([cb], epochs=epochs, net=net)
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])


def test_model_errors_are_raised_before_any_weight_changes():
    _fit_and_expect(PruningCallback(0.5, [0], parameters=["conv*"], verbose=0), ValueError,
                    r"pattern 'conv\*' matches no trainable parameter; the trainable parameters are \['fc1.weight'")
    _fit_and_expect(PruningCallback(0.5, [5], verbose=0), ValueError,
                    r"asks to prune at epoch\(s\) \[5\], but this fit ends at epoch 1 .*pass epochs >= 6")


def test_model_without_prunable_parameters():
    net = paddle.nn.Sequential(paddle.nn.Linear(8, 4))
    net[0].weight.stop_gradient = True
    before = net[0].weight.numpy().copy()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="Sequential has no prunable parameter"):
        model.fit(classification_data(), epochs=1, batch_size=32, verbose=0,
                  callbacks=[PruningCallback(0.5, [0], verbose=0)])
    np.testing.assert_array_equal(net[0].weight.numpy(), before)
