from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import MLP, zeros

from paddle_prune_callback import Pruner


def set_linspace(net, scale=1.0):
    """Distinct linspace values in every parameter: fc1.weight in [-1, 1] (128 values), the others
    (fc2.weight's 64 values among them) in [-scale, scale]."""
    with paddle.no_grad():
        for i, p in enumerate(net.parameters()):
            n = int(np.prod(p.shape))
            values = np.linspace(-1, 1, n, dtype="float32") * (scale if i else 1.0)
            p.set_value(values.reshape(p.shape))


def train_steps(net, opt, pruner, steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = paddle.to_tensor(rng.standard_normal((16, 8)).astype("float32"))
        loss = (net(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        pruner.step()


def test_magnitude_global_prunes_exactly_the_smallest():
    net = MLP()
    set_linspace(net)
    pruner = Pruner(net, criterion="magnitude")
    assert list(pruner.parameters) == ["fc1.weight", "fc2.weight"]   # LayerNorm and biases left out
    result = pruner.prune(sparsity=0.5)
    w = np.concatenate([p.numpy().ravel() for p in pruner.parameters.values()])
    assert int(w.size - np.count_nonzero(w)) == 96
    original = np.abs(np.concatenate([np.linspace(-1, 1, 128), np.linspace(-1, 1, 64)]).astype("float32"))
    np.testing.assert_array_equal(np.sort(original[w == 0]), np.sort(original)[:96])
    assert result == {"fc1.weight": zeros(net.fc1.weight) / 128, "fc2.weight": zeros(net.fc2.weight) / 64,
                      "global": 0.5}


def test_layer_scope_gives_every_parameter_the_same_sparsity():
    net = MLP()
    set_linspace(net, scale=0.01)         # fc2 tiny: global scope would empty it first
    pruner = Pruner(net, criterion="magnitude", scope="layer")
    pruner.prune(sparsity=0.75)
    assert zeros(net.fc1.weight) == 96 and zeros(net.fc2.weight) == 48


def test_global_scope_ranks_across_parameters():
    net = MLP()
    set_linspace(net, scale=0.01)
    Pruner(net, criterion="magnitude").prune(sparsity=0.25)
    assert zeros(net.fc2.weight) == 48 and zeros(net.fc1.weight) == 0   # the 48 smallest all live in fc2


def test_keeps_at_least_one_weight_per_parameter():
    net = MLP()
    set_linspace(net, scale=1e-3)
    pruner = Pruner(net, criterion="magnitude")
    sparsity = pruner.prune(sparsity=0.99)
    assert np.count_nonzero(net.fc2.weight.numpy()) == 1
    assert np.abs(net.fc2.weight.numpy()).max() == pytest.approx(1e-3)   # its largest weight survives
    assert zeros(net.fc1.weight) + zeros(net.fc2.weight) == round(0.99 * 192)
    assert sparsity["global"] == pytest.approx(round(0.99 * 192) / 192)


def test_masks_are_monotone_and_never_revive():
    net = MLP()
    set_linspace(net)
    pruner = Pruner(net, criterion="magnitude").attach()
    pruner.prune(sparsity=0.3)
    first = {n: k.copy() for n, k in pruner.keep.items()}
    with paddle.no_grad():   # make the pruned positions the largest if they were alive
        for name, p in pruner.parameters.items():
            w = p.numpy().ravel()
            w[~first[name]] = 10.0
            p.set_value(w.reshape(p.shape))
    pruner.prune(sparsity=0.6)
    for name, keep in pruner.keep.items():
        assert not (keep & ~first[name]).any()
        assert (pruner.parameters[name].numpy().ravel()[~keep] == 0).all()
    assert zeros(net.fc1.weight) + zeros(net.fc2.weight) == round(0.6 * 192)


OPTIMIZERS = {
    "sgd+l2": lambda ps: paddle.optimizer.SGD(0.1, parameters=ps, weight_decay=paddle.regularizer.L2Decay(0.01)),
    "momentum+l2": lambda ps: paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=ps, weight_decay=0.01),
    "adam+wd": lambda ps: paddle.optimizer.Adam(0.01, parameters=ps, weight_decay=0.01),
    "adamw": lambda ps: paddle.optimizer.AdamW(0.01, parameters=ps, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("criterion", ["magnitude", "fisher", "hybrid"])
def test_pruned_weights_stay_zero_after_updates(name, criterion):
    net = MLP()
    opt = OPTIMIZERS[name](net.parameters())
    pruner = Pruner(net, criterion=criterion).attach(opt)
    train_steps(net, opt, pruner, 5)               # builds momentum/moments for every weight
    pruner.prune(sparsity=0.7)
    pruned = zeros(net.fc1.weight) + zeros(net.fc2.weight)
    assert pruned == round(0.7 * 192)
    for _, per_param in opt._accumulators.items():   # moments of pruned weights were zeroed
        for pname, p in pruner.parameters.items():
            state = per_param.get(p.name)
            if state is not None and list(state.shape) == list(p.shape):
                assert (state.numpy().ravel()[~pruner.keep[pname]] == 0).all()
    train_steps(net, opt, pruner, 5, seed=2)
    assert zeros(net.fc1.weight) + zeros(net.fc2.weight) == pruned
    assert np.count_nonzero(net.fc1.weight.numpy().ravel()[pruner.keep["fc1.weight"]]) > 0


def test_gradients_of_pruned_weights_are_masked():
    net = MLP()
    pruner = Pruner(net, criterion="magnitude").attach()
    pruner.prune(sparsity=0.5)
    (net(paddle.randn([4, 8])) ** 2).mean().backward()
    grad = net.fc1.weight.grad.numpy().ravel()
    assert (grad[~pruner.keep["fc1.weight"]] == 0).all() and np.count_nonzero(grad) > 0


def test_gradient_criterion_is_the_mean_of_squared_gradients():
    net = MLP()
    pruner = Pruner(net, criterion="gradient").attach()
    rng = np.random.default_rng(0)
    batches = [paddle.to_tensor(rng.standard_normal((4, 8)).astype("float32")) for _ in range(3)]
    by_hand = []
    for x in batches:   # the reference: gradients from paddle.grad, independent of the hooks
        (g,) = paddle.grad((net(x) ** 2).mean(), [net.fc1.weight])
        by_hand.append(g.numpy() ** 2)
    for x in batches:
        (net(x) ** 2).mean().backward()
        net.clear_gradients()
        pruner.step()
    np.testing.assert_allclose(pruner.mean_sq_grads()["fc1.weight"].reshape(8, 16), np.mean(by_hand, axis=0),
                               rtol=1e-5, atol=1e-12)


def test_fisher_prunes_lowest_half_g2_w2_and_resets_accumulators():
    net = MLP()
    pruner = Pruner(net, criterion="fisher").attach()
    for _ in range(2):
        (net(paddle.randn([4, 8])) ** 2).mean().backward()
        net.clear_gradients()
        pruner.step()
    g2 = pruner.mean_sq_grads()
    scores = np.concatenate([0.5 * g2[n] * p.numpy().ravel() ** 2 for n, p in pruner.parameters.items()])
    pruner.prune(sparsity=0.4)
    keep = np.concatenate([pruner.keep[n] for n in pruner.parameters])
    assert scores[~keep].max() <= scores[keep].min()
    assert (~keep).sum() == round(0.4 * 192)
    assert pruner.num_batches == 0
    assert all(float(a.abs().sum()) == 0 for a in pruner._sq_grads.values())


def _hybrid_after_three_batches():
    """A hybrid pruner that recorded three batches, and, in float64 over all its pruned weights: the weights
    and the mean g² from gradients taken with paddle.grad (independent of the engine's hooks)."""
    net = MLP()
    pruner = Pruner(net, criterion="hybrid").attach()
    rng = np.random.default_rng(0)
    batches = [paddle.to_tensor(rng.standard_normal((4, 8)).astype("float32")) for _ in range(3)]
    params = list(pruner.parameters.values())
    sq = [np.zeros(p.shape) for p in params]
    for x in batches:
        for acc, g in zip(sq, paddle.grad((net(x) ** 2).mean(), params)):
            acc += g.numpy().astype(np.float64) ** 2
    for x in batches:
        (net(x) ** 2).mean().backward()
        net.clear_gradients()
        pruner.step()
    w = np.concatenate([p.numpy().astype(np.float64).ravel() for p in params])
    return net, pruner, w, np.concatenate([acc.ravel() / 3 for acc in sq])


def lowest(scores, k):
    return set(np.argsort(scores, kind="stable")[:k].tolist())


def test_hybrid_scores_match_a_numpy_reference_and_selection_is_exact():
    net, pruner, w, g2 = _hybrid_after_three_batches()
    reference = w ** 2 * np.sqrt(g2)
    k = round(0.4 * w.size)
    pruner.prune(sparsity=0.4)
    pruned = set(np.flatnonzero(~np.concatenate([pruner.keep[n] for n in pruner.parameters])).tolist())
    assert pruned == lowest(reference, k)
    assert zeros(net.fc1.weight) + zeros(net.fc2.weight) == k
    assert lowest(reference, k) == lowest(np.abs(w) * g2 ** 0.25, k)        # it ranks like |w|·F^¼
    assert pruned != lowest(0.5 * g2 * w ** 2, k) and pruned != lowest(np.abs(w), k)   # neither fisher nor magnitude

    # The scores' values, not only their order: a threshold between two reference scores prunes exactly
    # the weights below it.
    net, pruner, w, g2 = _hybrid_after_three_batches()
    reference = w ** 2 * np.sqrt(g2)
    order = np.sort(reference)
    separated = np.flatnonzero((order[1:] - order[:-1]) / order[1:] > 1e-3)
    i = int(separated[np.abs(separated - w.size // 3).argmin()])
    pruner.prune(threshold=float((order[i] + order[i + 1]) / 2))
    assert np.array_equal(~np.concatenate([pruner.keep[n] for n in pruner.parameters]), reference <= order[i])
    assert zeros(net.fc1.weight) + zeros(net.fc2.weight) == i + 1


def test_threshold_prunes_scores_below_it():
    net = MLP()
    set_linspace(net)
    pruner = Pruner(net, criterion="magnitude")
    pruner.prune(threshold=0.5)
    for p in pruner.parameters.values():
        w = np.linspace(-1, 1, int(np.prod(p.shape)), dtype="float32")
        assert zeros(p) == int((np.abs(w) < 0.5).sum())


def test_threshold_above_every_score_keeps_one_weight_each():
    net = MLP()
    Pruner(net, criterion="magnitude").prune(threshold=100.0)
    assert np.count_nonzero(net.fc1.weight.numpy()) == 1 and np.count_nonzero(net.fc2.weight.numpy()) == 1


def test_sparsity_counts_zeros_in_the_weights():
    net = MLP()
    pruner = Pruner(net, criterion="magnitude")
    with paddle.no_grad():
        w = net.fc1.weight.numpy()
        w[:2] = 0   # 32 zeros written by hand, without any mask
        net.fc1.weight.set_value(w)
    assert pruner.sparsity() == {"fc1.weight": 32 / 128, "fc2.weight": 0.0, "global": 32 / 192}


def test_parameter_patterns_and_callables():
    net = MLP()
    assert list(Pruner(net, parameters=["fc2.*"]).parameters) == ["fc2.weight", "fc2.bias"]
    assert list(Pruner(net, parameters=lambda n, p: n.startswith("fc1")).parameters) == ["fc1.weight", "fc1.bias"]


def test_frozen_parameters_are_not_pruned_or_hooked():
    net = MLP()
    net.fc1.weight.stop_gradient = True
    pruner = Pruner(net, criterion="fisher").attach()
    assert list(pruner.parameters) == ["fc2.weight"]


def test_prune_without_recorded_batches_is_an_error_and_changes_nothing():
    net = MLP()
    before = net.fc1.weight.numpy().copy()
    pruner = Pruner(net, criterion="fisher").attach()
    with pytest.raises(RuntimeError, match="no batch was recorded since the last prune; call pruner.step()"):
        pruner.prune(sparsity=0.5)
    np.testing.assert_array_equal(net.fc1.weight.numpy(), before)


def test_non_finite_weights_are_refused_before_any_change():
    net = MLP()
    with paddle.no_grad():
        w = net.fc2.weight.numpy()
        w[0, 0] = np.nan
        net.fc2.weight.set_value(w)
    before = net.fc1.weight.numpy().copy()
    with pytest.raises(FloatingPointError, match="'fc2.weight' has non-finite weights"):
        Pruner(net, criterion="magnitude").prune(sparsity=0.5)
    np.testing.assert_array_equal(net.fc1.weight.numpy(), before)


def test_state_dict_round_trip_restores_masks_and_scores():
    net = MLP()
    pruner = Pruner(net, criterion="fisher").attach()
    train_steps(net, paddle.optimizer.SGD(0.01, parameters=net.parameters()), pruner, 2)
    pruner.prune(sparsity=0.5)
    train_steps(net, paddle.optimizer.SGD(0.01, parameters=net.parameters()), pruner, 2)
    state = pruner.state_dict()
    other = MLP()
    restored = Pruner(other, criterion="fisher")
    restored.set_state_dict(state)
    for name in pruner.keep:
        np.testing.assert_array_equal(restored.keep[name], pruner.keep[name])
        assert (restored.parameters[name].numpy().ravel()[~pruner.keep[name]] == 0).all()
    for name, g2 in pruner.mean_sq_grads().items():
        np.testing.assert_array_equal(restored.mean_sq_grads()[name], g2)
