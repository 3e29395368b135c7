"""``prune_steps`` through ``Model.fit``: events after the listed optimizer updates, accumulation counted
right, checks against the fit's length, VisualDL by step; and the "not reached" report of a fit that stops
early (EarlyStopping, ``num_iters``, a loader without a length)."""
from __future__ import annotations

import glob
import os

import numpy as np
import paddle
import pytest
from conftest import MLP, classification_data

from paddle_prune_callback import PruningCallback, PruningSchedule

NAMES = ("fc1.weight", "fc2.weight")
TOTAL = 8 * 16 + 16 * 4     # 192 prunable weights in the MLP


class UpdateProbe(paddle.callbacks.Callback):
    """After every batch (placed after the PruningCallback): whether the weights changed, i.e. whether the
    optimizer updated, and the exact zeros of the pruned parameters, checked against the engine's masks."""

    def __init__(self, pruning):
        super().__init__()
        self.pruning = pruning
        self.updated, self.zeros = [], []
        self._before = None

    def _weights(self):
        params = dict(self.model.network.named_parameters())
        return {n: params[n].numpy().copy() for n in NAMES}

    def on_train_batch_begin(self, step, logs=None):
        self._before = self._weights()

    def on_train_batch_end(self, step, logs=None):
        after = self._weights()
        self.updated.append(any(not np.array_equal(after[n], self._before[n]) for n in NAMES))
        self.zeros.append(sum(int(w.size - np.count_nonzero(w)) for w in after.values()))
        for n, keep in self.pruning.pruner.keep.items():      # every masked weight is exactly zero
            assert not after[n].reshape(-1)[~keep].any()


def fit(callbacks, epochs=3, net=None, data=None, **kwargs):
    net = net or MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters(), weight_decay=0.01),
                  paddle.nn.CrossEntropyLoss())
    model.fit(classification_data() if data is None else data, epochs=epochs, batch_size=32, verbose=0, shuffle=False,
              callbacks=callbacks, **kwargs)
    return model


def test_events_after_the_listed_updates_with_accumulation():
    # 4 batches per epoch, accumulate 3: hapi updates after batches 2 and 3 of each epoch (the last batch
    # always updates), so 3 epochs are 6 steps. The probe sees which batches changed the weights.
    prune_steps = [1, 2, 4]
    cb = PruningCallback(0.8, prune_steps=prune_steps, criterion="fisher", schedule="linear", verbose=0)
    probe = UpdateProbe(cb)
    fit([cb, probe], epochs=3, accumulate_grad_batches=3)
    assert probe.updated == [False, False, True, True] * 3
    schedule, expected, zeros, step = PruningSchedule(0.8, prune_steps, "linear"), [], 0, -1
    for updated in probe.updated:
        step += updated
        if updated and step in prune_steps:
            zeros = round(schedule(step)[1] * TOTAL)
        expected.append(zeros)
    assert probe.zeros == expected and zeros == round(0.8 * TOTAL)
    assert cb.steps_completed == 6 and cb.not_reached == []
    assert [(h["epoch"], h["step"], h["pruned"]) for h in cb.history] == [(0, 2, True), (1, 4, True), (2, 6, True)]
    assert [h["target_sparsity"] for h in cb.history] == pytest.approx([0.8 / 3, 0.8 * 2 / 3, 0.8])


def test_squared_gradient_mean_counts_every_backward_not_every_update():
    net = MLP()
    params = dict(net.named_parameters())
    per_batch = {n: [] for n in NAMES}

    def reference_hook(name):
        def hook(grad):
            per_batch[name].append(np.square(grad.numpy().astype(np.float64)))
        return hook

    for n in NAMES:       # registered before the callback's hooks
        params[n].register_hook(reference_hook(n))
    cb = PruningCallback(0.5, prune_steps=[0], criterion="fisher", verbose=0)
    fit([cb], epochs=2, net=net, accumulate_grad_batches=3)
    assert cb.steps_completed == 4 and len(per_batch[NAMES[0]]) == 8
    # the prune after step 0 (batch 2) restarted the mean: batches 3..7 follow, 5 backward passes in 3 updates
    means = cb.pruner.mean_sq_grads()
    for n in NAMES:
        np.testing.assert_allclose(means[n], np.mean(per_batch[n][3:], axis=0).reshape(-1), rtol=1e-5)


def test_steps_beyond_the_fit_are_refused_before_any_weight_changes():
    net = MLP()
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    cb = PruningCallback(0.5, prune_steps=range(2, 40, 2), verbose=0)    # 3 epochs of 4 batches, 2 per step
    with pytest.raises(ValueError, match=r"`prune_steps` asks to prune after step\(s\) \[6, 8, .*\(17 in all\)\], "
                                         r"but this run's last optimizer step is 5 \(0 steps done before it \+ 6 in "
                                         r"it: epochs=3, 2 batch\(es\) per step\); train longer"):
        fit([cb], epochs=3, net=net, accumulate_grad_batches=2)
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])


@pytest.mark.parametrize("num_iters, accumulate, updated", [
    (8, 1, [True] * 8),                       # two full epochs, hapi promises epochs=3
    (6, 1, [True] * 6),                       # one epoch and a half
    (3, 1, [True] * 3),                       # within the first epoch
    (7, 3, [False, False, True, True, False, False, True]),
    (4, 3, [False, False, True, True]),       # exactly one epoch: its last batch updates
    (2, 3, [False, False]),                   # within the first epoch: no update at all
])
def test_num_iters_counts_the_updates_the_fit_really_makes(num_iters, accumulate, updated):
    cb = PruningCallback(0.5, prune_steps=[sum(updated) + 5], criterion="magnitude", verbose=0)
    with pytest.raises(ValueError, match=rf"last optimizer step is {sum(updated) - 1} .*{sum(updated)} in it: "
                                         rf"num_iters={num_iters}"):
        fit([cb], epochs=1, num_iters=num_iters, accumulate_grad_batches=accumulate)
    cb = PruningCallback(0.5, prune_steps=[max(sum(updated) - 1, 0)], criterion="magnitude", verbose=0)
    probe = UpdateProbe(cb)
    if sum(updated):
        fit([cb, probe], epochs=1, num_iters=num_iters, accumulate_grad_batches=accumulate)
        assert probe.updated == updated and cb.steps_completed == sum(updated)
        assert probe.zeros[-1] == round(0.5 * TOTAL)


def test_num_iters_that_ends_before_a_prune_epoch_is_refused():
    cb = PruningCallback(0.9, prune_epochs=[0, 2], verbose=0)
    with pytest.raises(ValueError, match=r"asks to prune at epoch\(s\) \[2\], but this fit ends at epoch 1 \(0 epochs "
                                         r"done before it \+ num_iters=8 at 4 batches per epoch\); let the run last "
                                         r"longer, or prune earlier"):
        fit([cb], epochs=5, num_iters=8)


def test_early_stopping_warns_that_the_target_was_not_reached(tmp_path, capsys):
    stop = paddle.callbacks.EarlyStopping(monitor="loss", mode="min", patience=0, baseline=-1.0, verbose=0,
                                          save_best_model=False)
    cb = PruningCallback(0.9, [0, 1, 2], criterion="magnitude", log_dir=str(tmp_path), verbose=1)
    message = (r"target sparsity 90.00% not reached, final sparsity 63.54%: prune epochs \[1, 2\] did not run "
               r"\(training stopped after 1 epochs")
    with pytest.warns(UserWarning, match=message):
        fit([cb, stop], epochs=4, eval_data=classification_data(seed=1))
    zeros = sum(int(p.numpy().size - np.count_nonzero(p.numpy())) for p in cb.pruner.parameters.values())
    assert zeros == round(0.9 * (1 - (1 - 1 / 3) ** 3) * TOTAL) == 122     # 122 / 192 = 63.54 %
    assert cb.not_reached == [1, 2] and cb.history[-1]["not_reached"] == [1, 2] and len(cb.history) == 1
    out = capsys.readouterr().out
    assert "final global sparsity 63.54%" in out and "prune epochs [1, 2] did not run" in out
    from visualdl import LogReader

    text = LogReader(file_path=glob.glob(os.path.join(tmp_path, "pruning", "vdlrecords.*"))[0]).get_data(
        "text", "pruning/summary")[0].text.encoded_text_string
    assert "not reached" in text and "prune epochs [1, 2] did not run" in text


class Stream(paddle.io.IterableDataset):
    def __iter__(self):
        x, y = classification_data().tensors
        for i in range(128):
            yield x[i], y[i]


def test_a_loader_without_length_warns_at_the_end_for_steps_that_did_not_run():
    cb = PruningCallback(0.5, prune_steps=[1, 3, 10], criterion="magnitude", verbose=0)
    with pytest.warns(UserWarning, match=r"not reached, final sparsity .*: prune steps \[10\] did not run "
                                         r"\(training stopped after 8 steps"):
        fit([cb], epochs=2, data=paddle.io.DataLoader(Stream(), batch_size=32))
    assert cb.steps_completed == 8 and cb.not_reached == [10]


def test_a_complete_schedule_does_not_warn(recwarn):
    fit([PruningCallback(0.5, prune_steps=[0, 5], criterion="magnitude", verbose=0)], epochs=2)
    assert not [w for w in recwarn if "not reached" in str(w.message)]


def test_visualdl_sparsity_by_step_and_the_console(tmp_path, capsys):
    cb = PruningCallback(0.6, prune_steps=[1, 4, 6], criterion="magnitude", schedule="linear", log_dir=str(tmp_path),
                         verbose=1)
    probe = UpdateProbe(cb)
    fit([cb, probe], epochs=2)
    from visualdl import LogReader

    reader = LogReader(file_path=glob.glob(os.path.join(tmp_path, "pruning", "vdlrecords.*"))[0])
    by_step = [(r.id, r.value) for r in reader.get_data("scalar", "pruning/sparsity_by_step")]
    assert [s for s, _ in by_step] == [1, 4, 6]
    assert [v for _, v in by_step] == pytest.approx([probe.zeros[s] / TOTAL for s in (1, 4, 6)])
    targets = [r.value for r in reader.get_data("scalar", "pruning/target_sparsity_by_step")]
    assert targets == pytest.approx([0.2, 0.4, 0.6])
    per_epoch = [(r.id, r.value) for r in reader.get_data("scalar", "pruning/sparsity")]
    assert per_epoch == [(0, pytest.approx(probe.zeros[3] / TOTAL)), (1, pytest.approx(probe.zeros[7] / TOTAL))]
    assert [r.id for r in reader.get_data("histogram", "pruning/surviving_weights")] == [1, 4, 6]
    out = capsys.readouterr().out
    assert "PruningCallback: step 4: sparsity 40.10% (target 40.00%, magnitude, global)" in out


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prune_epochs=[0], prune_steps=[5]), ValueError, r"either `prune_epochs` \(\[0\]\) or `prune_steps` \(\[5\]\)"),
    (dict(prune_steps=[5, 3]), ValueError, r"`prune_steps` must be in increasing order, got \[5, 3\]; pass \[3, 5\]"),
    (dict(prune_steps=[-1]), ValueError, r"`prune_steps` must be >= 0 \(steps are 0-based\), got -1"),
    (dict(prune_steps=range(0)), ValueError, r"`prune_steps` is empty"),
    (dict(prune_steps="100"), TypeError, r"`prune_steps` must be a list of 0-based step indices such as "
                                         r"range\(200, 6000, 200\), got '100'"),
    (dict(prune_steps=[1.5]), TypeError, r"`prune_steps` must hold integers, got 1.5"),
])
def test_prune_steps_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruningCallback(0.5, **kwargs)
