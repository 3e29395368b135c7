"""Checkpoint and resume: a run killed mid-epoch ends with the masks of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from conftest import MLP, MaskProbe, classification_data

from paddle_prune_callback import PruningCallback
from paddle_prune_callback.checkpoint import STATE_FILE, latest_checkpoint

WORKER = str(Path(__file__).with_name("resume_worker.py"))


def worker(*args):
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=dict(os.environ, GLOG_minloglevel="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("unit, steps", [("epochs", (24, 48)), ("steps", (9, 18))])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, unit, steps):
    full = worker("full", tmp_path / "full_state", tmp_path / "full.npz", "fisher", unit)
    crash = worker("crash", tmp_path / "state", tmp_path / "marker", "fisher", unit)
    deadline = time.monotonic() + 120
    while not (tmp_path / "marker").exists():
        assert crash.poll() is None, crash.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the crashing run never reached epoch 3"
        time.sleep(0.1)
    crash.send_signal(signal.SIGKILL)
    crash.wait(timeout=30)
    assert crash.returncode == -signal.SIGKILL
    latest = latest_checkpoint(str(tmp_path / "state"))
    assert latest is not None and latest.endswith("epoch_2")   # epochs 0-2 done, killed inside epoch 3
    saved = np.load(os.path.join(latest, STATE_FILE), allow_pickle=False)
    assert int(saved["callback/epochs_completed"]) == 3 and any(k.startswith("keep/") for k in saved.files)
    assert int(saved["callback/steps_completed"]) == steps[0]

    resumed = worker("resume", tmp_path / "state", tmp_path / "resumed.npz", "fisher", unit)
    finish(full)
    finish(resumed)
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert int(a["epochs_completed"]) == int(b["epochs_completed"]) == 6
    assert int(a["steps_completed"]) == int(b["steps_completed"]) == steps[1]
    keys = [k for k in a.files if k.startswith("keep/")]
    assert keys == [k for k in b.files if k.startswith("keep/")] and len(keys) == 2
    for k in keys:
        np.testing.assert_array_equal(a[k], b[k])
    total = sum(a[k].size for k in keys)
    assert sum(int((~a[k]).sum()) for k in keys) == round(0.8 * total)
    for k in (k for k in a.files if k.startswith("weight/")):
        np.testing.assert_array_equal(a[k], b[k])


def _trained(tmp_path, criterion="fisher", net=None, epochs=2):
    net = net or MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    cb = PruningCallback(0.5, [0], criterion=criterion, state_dir=str(tmp_path), verbose=0)
    probe = MaskProbe(cb)
    model.fit(classification_data(), epochs=epochs, batch_size=32, verbose=0, callbacks=[cb, probe])
    assert probe.updates_checked == (epochs - 1) * 4
    return model, cb


def _fresh_model(net=None):
    net = net or MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    return model


def test_keeps_the_newest_checkpoints_only(tmp_path):
    _trained(tmp_path, epochs=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_2", "epoch_3"]


def test_resume_restores_masks_weights_and_schedule_position(tmp_path):
    model, cb = _trained(tmp_path)
    fresh = _fresh_model()
    resumed = PruningCallback.resume(str(tmp_path), fresh, verbose=0)
    assert resumed.epochs_completed == 2 and resumed.prune_epochs == (0,) and resumed.criterion == "fisher"
    assert [h["sparsity"] for h in resumed.history] == [h["sparsity"] for h in cb.history]
    for p, q in zip(model.network.parameters(), fresh.network.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    for n in cb.pruner.keep:
        np.testing.assert_array_equal(resumed.pruner.keep[n], cb.pruner.keep[n])


def _expect_untouched(error, match, call):
    fresh = _fresh_model(MLP())
    before = {n: p.numpy().copy() for n, p in fresh.network.named_parameters()}
    with pytest.raises(error, match=match):
        call(fresh)
    for n, p in fresh.network.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])


def test_missing_state_dir(tmp_path):
    _expect_untouched(FileNotFoundError, r"no complete checkpoint .* under '.*nowhere'",
                      lambda m: PruningCallback.resume(str(tmp_path / "nowhere"), m))


def test_truncated_state_file(tmp_path):
    _trained(tmp_path)
    state_file = Path(latest_checkpoint(str(tmp_path))) / STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:200])
    _expect_untouched(ValueError, r"pruning_state.npz' cannot be read .* truncated",
                      lambda m: PruningCallback.resume(str(tmp_path), m))


def test_state_of_another_model(tmp_path):
    class Wider(MLP):
        def __init__(self):
            super().__init__((8, 32, 4))

    _trained(tmp_path, net=Wider())
    _expect_untouched(ValueError, r"cannot resume from .*other shapes \(saved, here\): fc1.weight: \(8, 32\) vs \(8, 16\)",
                      lambda m: PruningCallback.resume(str(tmp_path), m))


def test_state_with_other_parameter_names(tmp_path):
    net = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 4))
    _trained(tmp_path, net=net)
    _expect_untouched(ValueError, r"saved state prunes parameters \['0.weight', '2.weight'\], but this network's "
                                  r"pruned parameters are \['fc1.weight', 'fc2.weight'\]",
                      lambda m: PruningCallback.resume(str(tmp_path), m))


def test_engine_refuses_state_of_another_criterion(tmp_path):
    _, cb = _trained(tmp_path, criterion="fisher")
    from paddle_prune_callback import Pruner
    net = MLP()
    before = net.fc1.weight.numpy().copy()
    with pytest.raises(ValueError, match=r"saved state is for criterion 'fisher', but this pruner uses 'magnitude'"):
        Pruner(net, criterion="magnitude").set_state_dict(cb.state_dict())
    np.testing.assert_array_equal(net.fc1.weight.numpy(), before)


def test_resume_cannot_override_the_saved_configuration(tmp_path):
    _trained(tmp_path)
    _expect_untouched(TypeError, r"cannot override \['criterion'\]",
                      lambda m: PruningCallback.resume(str(tmp_path), m, criterion="magnitude"))


def test_resume_in_the_same_process_maps_optimizer_state_to_new_parameter_names(tmp_path):
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    original = PruningCallback(0.5, [0], state_dir=str(tmp_path / "a"), verbose=0)
    model.fit(classification_data(), epochs=2, batch_size=32, verbose=0, callbacks=[original])

    new_net = MLP()                                      # same process: new generated parameter names
    rebuilt = paddle.Model(new_net)
    rebuilt.prepare(paddle.optimizer.Momentum(0.05, parameters=new_net.parameters()), paddle.nn.CrossEntropyLoss())
    assert new_net.fc1.weight.name != net.fc1.weight.name
    resumed = PruningCallback.resume(str(tmp_path / "a"), rebuilt, verbose=0, state_dir=str(tmp_path / "b"))
    for cb, m in ((resumed, rebuilt), (original, model)):   # one more epoch each, same data order
        m.fit(classification_data(), epochs=1, batch_size=32, verbose=0, shuffle=False, callbacks=[cb])
    # equal weights after the extra epoch: the restored momentum velocity was used, not zeros
    for p, q in zip(net.parameters(), new_net.parameters()):
        np.testing.assert_array_equal(q.numpy(), p.numpy())
    assert resumed.sparsity() == original.sparsity() and resumed.sparsity()["global"] == 0.5


class _StopAfter(paddle.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = epoch == self.epoch


@pytest.mark.parametrize("criterion", ["fisher", "hybrid"])
def test_resumed_between_two_prunes_prunes_as_the_uninterrupted_run(tmp_path, criterion):
    """Stopped after epoch 1 of prune epochs (0, 2, 3): the checkpoint holds the g² of epoch 1, which the
    prune at the end of epoch 2 needs. Masks equal the uninterrupted run's, bitwise."""
    def run(callbacks, epochs, seed=0, model=None):
        with paddle.utils.unique_name.guard():
            paddle.seed(seed)
            model = model or _fresh_model()
            model.fit(classification_data(), epochs=epochs, batch_size=32, shuffle=False, verbose=0,
                      callbacks=callbacks)
        return model

    whole = PruningCallback(0.75, [0, 2, 3], criterion=criterion, verbose=0)
    run([whole], 4)
    first = PruningCallback(0.75, [0, 2, 3], criterion=criterion, state_dir=str(tmp_path), verbose=0)
    run([first, _StopAfter(1)], 4)
    assert first.epochs_completed == 2 and first.pruner.num_batches == 4       # g² of epoch 1, not yet used
    with paddle.utils.unique_name.guard():
        paddle.seed(100)                                     # other initial weights until the checkpoint loads
        fresh = _fresh_model()
    resumed = PruningCallback.resume(str(tmp_path), fresh, verbose=0)
    assert resumed.pruner.num_batches == 4 and resumed.criterion == criterion
    run([resumed], 2, model=fresh)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for n, keep in whole.pruner.keep.items():
        np.testing.assert_array_equal(resumed.pruner.keep[n], keep)
    assert resumed.sparsity() == whole.sparsity() and whole.sparsity()["global"] == 0.75
