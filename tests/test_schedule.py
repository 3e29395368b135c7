from __future__ import annotations

import math

import pytest

from paddle_prune_callback.schedule import PruningSchedule, default_prune_epochs

EPOCHS = [1, 3, 5, 7]


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("linear", [0.225, 0.45, 0.675, 0.9]),
        ("constant", [0.9, 0.9, 0.9, 0.9]),
        # 0.9·(1 − (1 − k/4)³) for k = 1..4, worked out by hand: 0.9·37/64, 0.9·56/64, 0.9·63/64, 0.9
        ("polynomial", [0.5203125, 0.7875, 0.8859375, 0.9]),
        (lambda k, n: 0.1 * (k + 1), [0.1, 0.2, 0.3, 0.4]),
    ],
)
def test_sparsity_at_every_epoch(schedule, expected):
    s = PruningSchedule(0.9, EPOCHS, schedule)
    values = dict(zip(EPOCHS, expected))
    reached = 0.0
    for epoch in range(10):
        should, sparsity = s(epoch)
        assert should == (epoch in EPOCHS)
        reached = values.get(epoch, reached)
        assert math.isclose(sparsity, reached), (epoch, sparsity, reached)


def test_polynomial_pinned_values():
    s = PruningSchedule(0.8, [0, 1])
    assert s.targets == pytest.approx((0.7, 0.8))  # 0.8 * (1 - 0.5**3), then 0.8


def test_single_event_reaches_target():
    for name in ("polynomial", "linear", "constant"):
        assert PruningSchedule(0.5, [4], name)(4) == (True, 0.5)
        assert PruningSchedule(0.5, [4], name)(3) == (False, 0.0)


def test_zero_target_prunes_nothing():
    assert PruningSchedule(0.0, [0, 1], "linear").targets == (0.0, 0.0)


@pytest.mark.parametrize("epochs, expected", [(1, (0,)), (2, (0, 1)), (4, (0, 1, 2)), (8, (0, 1, 2, 3, 4, 5))])
def test_default_prune_epochs(epochs, expected):
    assert default_prune_epochs(epochs) == expected


def test_default_prune_epochs_at_most_ten_and_leave_a_quarter():
    epochs = default_prune_epochs(100)
    assert len(epochs) == 10 and epochs[0] == 0 and epochs[-1] == 74


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(target_sparsity=1.0), ValueError, r"`target_sparsity` must be in \[0, 1\), got 1.0"),
        (dict(target_sparsity=-0.1), ValueError, r"got -0.1"),
        (dict(target_sparsity=float("nan")), ValueError, r"got nan"),
        (dict(target_sparsity="0.9"), TypeError, r"got '0.9' of type str"),
        (dict(target_sparsity=True), TypeError, r"got True"),
        (dict(prune_epochs=[3, 1]), ValueError, r"increasing order, got \[3, 1\]; pass \[1, 3\]"),
        (dict(prune_epochs=[1, 1]), ValueError, r"duplicates: \[1, 1\]"),
        (dict(prune_epochs=[-1, 2]), ValueError, r"must be >= 0"),
        (dict(prune_epochs=[]), ValueError, r"is empty"),
        (dict(prune_epochs=[1.5]), TypeError, r"must hold integers, got 1.5"),
        (dict(prune_epochs=3), TypeError, r"must be a list of 0-based epoch indices"),
        (dict(schedule="cubic"), ValueError, r"`schedule` must be one of \['polynomial', 'linear', 'constant'\], got 'cubic'"),
        (dict(schedule=lambda k, n: 0.5 - 0.1 * k), ValueError, r"returned 0.4 for \(k=1, n=4\), below 0.5"),
        (dict(schedule=lambda k, n: 1.0), ValueError, r"returned 1.0 for \(k=0, n=4\).*\[0, 1\)"),
        (dict(schedule=lambda k, n: 0.95), ValueError, r"above `target_sparsity`=0.9"),
        (dict(schedule=lambda k, n: "x"), TypeError, r"returned 'x'"),
    ],
)
def test_validation(kwargs, error, match):
    args = dict(target_sparsity=0.9, prune_epochs=EPOCHS, schedule="polynomial")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        PruningSchedule(**args)
