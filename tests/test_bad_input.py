"""Bad input gets a clear error before any weight or optimizer state changes."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import MLP, classification_data

from paddle_prune_callback import PruningCallback


@pytest.fixture
def trained():
    """A model after one epoch of Adam, so that the optimizer has state to lose."""
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    model.fit(classification_data(), epochs=1, batch_size=32, verbose=0)
    return model


def snapshot(model):
    weights = {n: p.numpy().copy() for n, p in model.network.named_parameters()}
    state = {k: v.numpy().copy() for k, v in model._optimizer.state_dict().items() if hasattr(v, "numpy")}
    assert weights and state
    return weights, state


def assert_unchanged(model, before):
    weights, state = snapshot(model)
    for name, value in before[0].items():
        np.testing.assert_array_equal(weights[name], value)
    assert state.keys() == before[1].keys()
    for name, value in before[1].items():
        np.testing.assert_array_equal(state[name], value)


ARGUMENTS = [
    (dict(target_sparsity=1.0), ValueError, r"`target_sparsity` must be in \[0, 1\), got 1.0"),
    (dict(target_sparsity=-0.1), ValueError, r"`target_sparsity` must be in \[0, 1\), got -0.1"),
    (dict(target_sparsity=float("nan")), ValueError, r"`target_sparsity` must be in \[0, 1\), got nan"),
    (dict(target_sparsity=float("inf")), ValueError, r"`target_sparsity` must be in \[0, 1\), got inf"),
    (dict(target_sparsity="0.9"), TypeError, r"`target_sparsity` must be a number in \[0, 1\), got '0.9'"),
    (dict(target_sparsity=True), TypeError, r"`target_sparsity` must be a number .* got True"),
    (dict(prune_epochs=[3, 1]), ValueError, r"`prune_epochs` must be in increasing order, got \[3, 1\]"),
    (dict(prune_epochs=[-1, 0]), ValueError, r"`prune_epochs` must be >= 0 \(epochs are 0-based\), got -1"),
    (dict(prune_epochs=[0, 0]), ValueError, r"`prune_epochs` has duplicates: \[0, 0\]"),
    (dict(prune_epochs=[]), ValueError, r"`prune_epochs` is empty"),
    (dict(prune_epochs=[0.5]), TypeError, r"`prune_epochs` must hold integers, got 0.5"),
    (dict(prune_epochs="0,1"), TypeError, r"`prune_epochs` must be a list of 0-based epoch indices"),
    (dict(criterion="l1"), ValueError, r"`criterion` must be one of \['magnitude', 'gradient', 'fisher', 'hybrid'\], got 'l1'"),
    (dict(scope="channel"), ValueError, r"`scope` must be one of \['global', 'layer'\], got 'channel'"),
    (dict(schedule="cosine"), ValueError, r"`schedule` must be one of \['polynomial', 'linear', 'constant'\]"),
    (dict(schedule=lambda k, n: 0.5 - 0.2 * k), ValueError, r"returned 0.3 for \(k=1, n=2\), below 0.5"),
    (dict(schedule=lambda k, n: 1.5), ValueError, r"returned 1.5 for \(k=0, n=2\); it must return a sparsity"),
    (dict(schedule=lambda k, n: 0.95), ValueError, r"returned 0.95 .* above `target_sparsity`=0.5"),
    (dict(threshold=0.1), ValueError, r"either `target_sparsity` \(0.5\) or `threshold` \(0.1\), not both"),
    (dict(target_sparsity=None), ValueError, r"pass `target_sparsity` \(e.g. 0.9\) or `threshold`"),
    (dict(target_sparsity=None, threshold=-1e-3), ValueError, r"`threshold` must be a finite number > 0"),
    (dict(target_sparsity=None, threshold=float("nan")), ValueError, r"`threshold` must be a finite number > 0"),
    (dict(parameters="fc1.weight"), TypeError, r"wrap it in a list: \['fc1.weight'\]"),
    (dict(parameters=[]), ValueError, r"`parameters` is an empty list"),
    (dict(parameters=[1, 2]), TypeError, r"`parameters` must be None, a list of parameter names"),
    (dict(verbose=-1), ValueError, r"`verbose` must be 0 \(silent\), 1 or 2, got -1"),
    (dict(log_dir=7), TypeError, r"`log_dir` must be a path or None, got 7"),
    (dict(state_dir=["a"]), TypeError, r"`state_dir` must be a path or None, got \['a'\]"),
    (dict(keep_checkpoints=0), ValueError, r"`keep_checkpoints` must be an integer >= 1, got 0"),
]


# Found in on_train_begin, when the model is known, still before any weight changes.
MODEL_PROBLEMS = [
    (dict(parameters=["conv*.weight"]), ValueError, r"pattern 'conv\*.weight' matches no trainable parameter; "
                                                    r"the trainable parameters are \['fc1.weight'"),
    (dict(parameters=lambda name, p: False), ValueError, r"the `parameters` callable selected none"),
    (dict(prune_epochs=[0, 4]), ValueError, r"asks to prune at epoch\(s\) \[4\], but this fit ends at epoch 1"),
]


@pytest.mark.parametrize("kwargs, error, match", ARGUMENTS + MODEL_PROBLEMS,
                         ids=[str(i) for i in range(len(ARGUMENTS) + len(MODEL_PROBLEMS))])
def test_bad_configuration(trained, kwargs, error, match):
    before = snapshot(trained)
    args = dict(target_sparsity=0.5, prune_epochs=[0, 1], verbose=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        trained.fit(classification_data(), epochs=2, batch_size=32, verbose=0, callbacks=[PruningCallback(**args)])
    assert_unchanged(trained, before)


def test_pattern_matching_only_frozen_parameters(trained):
    trained.network.fc2.weight.stop_gradient = True
    before = snapshot(trained)
    with pytest.raises(ValueError, match=r"pattern 'fc2.weight' matches no trainable parameter \(it matches only "
                                         r"frozen parameters\)"):
        trained.fit(classification_data(), epochs=1, batch_size=32, verbose=0,
                    callbacks=[PruningCallback(0.5, [0], parameters=["fc2.weight"], verbose=0)])
    assert_unchanged(trained, before)


def test_integer_parameter(trained):
    trained.network.counts = trained.network.create_parameter(
        [4, 4], dtype="int32", default_initializer=paddle.nn.initializer.Constant(1))
    before = snapshot(trained)
    with pytest.raises(TypeError, match=r"parameter 'counts' has dtype paddle.int32; only floating-point"):
        trained.fit(classification_data(), epochs=1, batch_size=32, verbose=0,
                    callbacks=[PruningCallback(0.5, [0], verbose=0)])
    assert_unchanged(trained, before)


def test_callback_reused_on_another_network(trained):
    cb = PruningCallback(0.5, [0], verbose=0)
    trained.fit(classification_data(), epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    other = paddle.Model(MLP())
    other.prepare(paddle.optimizer.Adam(0.01, parameters=other.network.parameters()), paddle.nn.CrossEntropyLoss())
    other.fit(classification_data(), epochs=1, batch_size=32, verbose=0)
    before = snapshot(other)
    with pytest.raises(ValueError, match="already prunes another network; create a new callback for each model"):
        other.fit(classification_data(), epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    assert_unchanged(other, before)


def test_static_graph_mode():
    class Data(paddle.io.Dataset):   # TensorDataset is dynamic-graph only
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return np.ones(8, "float32"), np.zeros(1, "int64")

    paddle.enable_static()
    try:
        net = MLP()
        model = paddle.Model(net, inputs=[paddle.static.InputSpec([None, 8], "float32", "x")],
                             labels=[paddle.static.InputSpec([None, 1], "int64", "y")])
        model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
        with pytest.raises(RuntimeError, match=r"dynamic graph mode only, but static graph mode is on .* call "
                                               r"paddle.disable_static\(\) first"):
            model.fit(Data(), epochs=1, batch_size=32, verbose=0, callbacks=[PruningCallback(0.5, [0], verbose=0)])
    finally:
        paddle.disable_static()
