"""Data parallel with real processes: 2 ranks on CPU (gloo), through ``paddle.Model.fit``.

The test process runs this file as a script once per module; the script starts 2 ranks with
``paddle.distributed.spawn`` and each rank runs, in one process start:

- one small fit per criterion. At every prune event it saves what it saw to
  ``<out>/<criterion>/rank<r>.epoch<e>.npz``: the masks, the combined mean g² the engine scored with, its
  own record of its LOCAL gradients (hooks of ours, registered before the pruner's, in float64), and the
  weights the engine read;
- per criterion in ``RESUME_CRITERIA``, a fit stopped after epoch 1 with ``state_dir``, resumed on a fresh
  model, trained to the end;
- the engine in a hand-written loop under fleet collective training;
- a prune where one rank recorded no batch.

The tests compare the two ranks' files. The example is run separately through
``python -m paddle.distributed.launch``, as the README says.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from conftest import MLP, classification_data
from paddle_prune_callback import Pruner, PruningCallback

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ("magnitude", "gradient", "fisher", "hybrid")
RESUME_CRITERIA = ("fisher", "hybrid")
PRUNE_EPOCHS = (0, 1, 2)
RESUME_PRUNE_EPOCHS = (0, 2, 3)       # stopped after epoch 1: the checkpoint holds g² of an unfinished window
TARGET = 0.75
WORLD = 2
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "reduce",
               "reduce_scatter", "scatter", "scatter_object_list", "gather", "alltoall", "alltoall_single",
               "barrier", "send", "recv", "isend", "irecv")


# ---------------------------------------------------------------------- what each rank runs
def _spy_collectives(calls: list) -> None:
    """Record every Python-level collective (DataParallel's own gradient all-reduce runs in C++ and is
    not seen, so what is counted is what the pruning code adds)."""
    for name in COLLECTIVES:
        original = getattr(paddle.distributed, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(paddle.distributed, name, spy)


def _model(net: paddle.nn.Layer) -> paddle.Model:
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    return model


def _keep_arrays(pruner: Pruner, prefix: str = "keep") -> dict:
    return {f"{prefix}/{n}": pruner.keep.get(n, np.ones(int(np.prod(p.shape)), dtype=bool))
            for n, p in pruner.parameters.items()}


class _LocalGradients(paddle.callbacks.Callback):
    """This rank's own record of its local gradients: mean g² per pruned parameter, reset by :meth:`take`."""

    def __init__(self, network: paddle.nn.Layer):
        super().__init__()
        self.params = {n: p for n, p in network.named_parameters() if p.ndim >= 2}
        self.sums = {n: np.zeros(p.shape, dtype=np.float64) for n, p in self.params.items()}
        self.batches = 0
        for name, p in self.params.items():
            p.register_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(grad):
            self.sums[name] += np.square(grad.numpy().astype(np.float64))

        return hook

    def on_train_batch_end(self, step, logs=None):
        self.batches += 1

    def take(self) -> dict:
        means = {n: (s / self.batches).ravel() for n, s in self.sums.items()}
        for s in self.sums.values():
            s[:] = 0
        self.batches = 0
        return means


class _Probe(paddle.callbacks.Callback):
    """Placed after the PruningCallback: captures the combined mean g² and the weights the engine scores,
    the collectives made while pruning, and saves everything at each epoch end."""

    def __init__(self, pruning: PruningCallback, local: _LocalGradients, out: Path, calls: list):
        super().__init__()
        self.pruning, self.local, self.out, self.calls = pruning, local, out, calls
        self.combined, self.weights, self.prune_calls = {}, {}, []

    def on_train_begin(self, logs=None):
        pruner = self.pruning.pruner
        engine_mean_sq_grads = pruner._checked_mean_sq_grads   # what prune() scores with under data parallel

        def capture():
            self.weights = {n: p.numpy().ravel().copy() for n, p in pruner.parameters.items()}
            before = len(self.calls)
            means = engine_mean_sq_grads()
            self.prune_calls = self.calls[before:]
            self.combined = {n: m.numpy().ravel() for n, m in means.items()}
            return means

        pruner._checked_mean_sq_grads = capture

    def on_epoch_end(self, epoch, logs=None):
        pruner, local = self.pruning.pruner, self.local.take()
        arrays = {"prune_collectives": np.array(len(self.prune_calls)), **_keep_arrays(pruner)}
        for name in pruner.parameters:
            arrays[f"weight/{name}"] = self.weights[name]
            arrays[f"local/{name}"] = local[name]
            if name in self.combined:
                arrays[f"combined/{name}"] = self.combined[name]
        np.savez(self.out / f"rank{paddle.distributed.get_rank()}.epoch{epoch}.npz", **arrays)
        self.combined, self.weights, self.prune_calls = {}, {}, []


def _fit_and_probe(criterion: str, out: Path, calls: list) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paddle.seed(paddle.distributed.get_rank())   # DataParallel must make the initial weights identical
    net = MLP()
    model = _model(net)
    local = _LocalGradients(net)                 # registered before the pruner's hooks: sees raw gradients
    pruning = PruningCallback(TARGET, PRUNE_EPOCHS, criterion=criterion, log_dir=str(out / "vdl"), verbose=0)
    before = len(calls)
    model.fit(classification_data(n=64), epochs=len(PRUNE_EPOCHS), batch_size=8,
              callbacks=[pruning, _Probe(pruning, local, out, calls), local], verbose=0)
    return {"collectives": calls[before:], "history": pruning.history, "sparsity": pruning.sparsity()}


class _StopAfter(paddle.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = epoch == self.epoch


def _interrupt_and_resume(out: Path, criterion: str) -> dict:
    """Train with checkpoints, stop after epoch 1, resume on a fresh model, train to the end."""
    import paddle_prune_callback.callback as callback_module

    out.mkdir(parents=True, exist_ok=True)
    rank, state_dir = paddle.distributed.get_rank(), str(out / "state")
    saves = []
    save_checkpoint = callback_module.save_checkpoint

    def counting_save(*args, **kwargs):
        saves.append(args[1])
        return save_checkpoint(*args, **kwargs)

    callback_module.save_checkpoint = counting_save
    epochs = RESUME_PRUNE_EPOCHS[-1] + 1
    data = classification_data(n=64)
    # Each run under its own name scope, as in a fresh process: optimizer state is saved by parameter name.
    with paddle.utils.unique_name.guard():
        paddle.seed(rank)
        first = PruningCallback(TARGET, RESUME_PRUNE_EPOCHS, criterion=criterion, state_dir=state_dir, verbose=0)
        _model(MLP()).fit(data, epochs=epochs, batch_size=8, shuffle=False, callbacks=[first, _StopAfter(1)],
                          verbose=0)
    with paddle.utils.unique_name.guard():
        paddle.seed(100 + rank)                 # the fresh model's weights differ until the checkpoint loads
        net = MLP()
        model = _model(net)
        resumed = PruningCallback.resume(state_dir, model, verbose=0)
        restored = _keep_arrays(resumed.pruner, "restored")
        model.fit(data, epochs=epochs - first.epochs_completed, batch_size=8, shuffle=False, callbacks=[resumed],
                  verbose=0)
    with paddle.utils.unique_name.guard():     # the same run without the interruption, for reference
        paddle.seed(rank)
        whole_net = MLP()
        whole = PruningCallback(TARGET, RESUME_PRUNE_EPOCHS, criterion=criterion, verbose=0)
        _model(whole_net).fit(data, epochs=epochs, batch_size=8, shuffle=False, callbacks=[whole], verbose=0)
    np.savez(out / f"rank{rank}.npz", **_keep_arrays(first.pruner, "saved"), **restored, **_keep_arrays(resumed.pruner),
             **_keep_arrays(whole.pruner, "uninterrupted"),
             **{f"weight/{n}": p.numpy() for n, p in net.named_parameters()},
             **{f"uninterrupted_weight/{n}": p.numpy() for n, p in whole_net.named_parameters()})
    callback_module.save_checkpoint = save_checkpoint
    return {"saves": saves, "stopped_after": first.epochs_completed, "history": resumed.history,
            "sparsity": resumed.sparsity()["global"]}


def _fleet_custom_loop(out: Path, calls: list) -> dict:
    """The engine in a hand-written loop under fleet collective training (pure data parallel)."""
    from paddle.distributed import fleet

    out.mkdir(parents=True, exist_ok=True)
    fleet.init(is_collective=True)
    rank = paddle.distributed.get_rank()
    paddle.seed(rank)
    net = MLP()
    inner = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    pruner = Pruner(net, criterion="fisher").attach(inner)     # the plain layer and the inner optimizer
    model, optimizer = fleet.distributed_model(net), fleet.distributed_optimizer(inner)
    data = classification_data(n=64)
    sampler = paddle.io.DistributedBatchSampler(data, batch_size=8, shuffle=True)
    loader = paddle.io.DataLoader(data, batch_sampler=sampler)
    before = len(calls)
    for epoch, target in enumerate((0.5, TARGET)):
        sampler.set_epoch(epoch)
        for x, y in loader:
            paddle.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.clear_grad()
            pruner.step()
        pruner.prune(sparsity=target)
        np.savez(out / f"rank{rank}.epoch{epoch}.npz", **_keep_arrays(pruner))
    return {"collectives": calls[before:], "sparsity": pruner.sparsity()["global"]}


def _no_batch_error() -> str | None:
    """A rank that recorded no batch must not leave the others waiting in the all-reduce: all ranks raise."""
    pruner = Pruner(MLP(), criterion="gradient").attach()
    pruner.num_batches = 1 if paddle.distributed.get_rank() == 0 else 0
    try:
        pruner.mean_sq_grads()
    except RuntimeError as err:
        return str(err)
    return None


def _rank_main(out_dir: str) -> None:
    import visualdl

    out = Path(out_dir)
    calls: list = []
    _spy_collectives(calls)
    writers: list = []

    class CountingLogWriter(visualdl.LogWriter):
        def __init__(self, *args, **kwargs):
            writers.append(kwargs.get("logdir"))
            super().__init__(*args, **kwargs)

    visualdl.LogWriter = CountingLogWriter
    report = {"world_size": paddle.distributed.get_world_size(),
              "fits": {c: _fit_and_probe(c, out / c, calls) for c in CRITERIA},
              "log_writers": writers,
              "resume": {c: _interrupt_and_resume(out / "resume" / c, c) for c in RESUME_CRITERIA},
              "custom_loop": _fleet_custom_loop(out / "custom_loop", calls),
              "no_batch_error": _no_batch_error()}
    (out / f"rank{paddle.distributed.get_rank()}.json").write_text(json.dumps(report))


# ---------------------------------------------------------------------- the test process
@pytest.fixture(scope="module")
def dp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp")
    env = dict(os.environ, GLOG_minloglevel="2")
    result = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _reports(out: Path) -> list:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def _events(out: Path, criterion: str) -> list:
    """Per prune event: one dict of arrays per rank."""
    return [[dict(np.load(out / criterion / f"rank{r}.epoch{e}.npz")) for r in range(WORLD)] for e in PRUNE_EPOCHS]


def _names(arrays: dict, kind: str) -> list:
    return sorted(k.split("/", 1)[1] for k in arrays if k.startswith(kind + "/"))


def _reference_scores(criterion: str, w: np.ndarray, g2: np.ndarray) -> np.ndarray:
    if criterion == "magnitude":
        return np.abs(w).astype(np.float64)
    if criterion == "gradient":
        return g2
    if criterion == "hybrid":
        return np.square(w.astype(np.float64)) * np.sqrt(g2)
    return 0.5 * g2 * np.square(w.astype(np.float64))


def test_runs_with_two_ranks(dp_run):
    assert [r["world_size"] for r in _reports(dp_run)] == [WORLD, WORLD]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_masks_bitwise_identical_on_every_rank_after_every_prune(dp_run, criterion):
    for event, (r0, r1) in zip(PRUNE_EPOCHS, _events(dp_run, criterion)):
        names = _names(r0, "keep")
        assert names and names == _names(r1, "keep")
        for name in names:
            assert r0[f"keep/{name}"].dtype == np.bool_
            assert np.array_equal(r0[f"keep/{name}"], r1[f"keep/{name}"]), (event, name)
            assert np.array_equal(r0[f"weight/{name}"], r1[f"weight/{name}"]), (event, name)
        pruned = sum(int(np.count_nonzero(~r0[f"keep/{n}"])) for n in names)
        assert pruned > 0


@pytest.mark.parametrize("criterion", ("gradient", "fisher", "hybrid"))
def test_combined_mean_sq_grad_is_mean_over_ranks_of_local_means(dp_run, criterion):
    for event, (r0, r1) in zip(PRUNE_EPOCHS, _events(dp_run, criterion)):
        for name in _names(r0, "local"):
            local0, local1 = r0[f"local/{name}"], r1[f"local/{name}"]
            assert not np.allclose(local0, local1), "the ranks saw the same data; the test would prove nothing"
            np.testing.assert_allclose(r0[f"combined/{name}"], (local0 + local1) / WORLD, rtol=2e-5, atol=1e-12)
            assert np.array_equal(r0[f"combined/{name}"], r1[f"combined/{name}"]), (event, name)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_pruned_weights_are_the_lowest_by_independently_computed_scores(dp_run, criterion):
    """Scores from our own record of both ranks' gradients: every weight pruned at an event scores no
    higher than any weight kept (except each parameter's best weight, which is always kept)."""
    alive = None
    for event, (r0, r1) in zip(PRUNE_EPOCHS, _events(dp_run, criterion)):
        names = _names(r0, "keep")
        alive = alive or {n: np.ones_like(r0[f"keep/{n}"]) for n in names}
        pruned_scores, kept_scores = [], []
        for n in names:
            g2 = (r0[f"local/{n}"] + r1[f"local/{n}"]) / WORLD
            scores, keep = _reference_scores(criterion, r0[f"weight/{n}"], g2), r0[f"keep/{n}"]
            assert not np.any(keep & ~alive[n]), "a pruned weight was revived"
            kept = keep.copy()
            kept[np.flatnonzero(alive[n])[np.argmax(scores[alive[n]])]] = False
            pruned_scores.append(scores[alive[n] & ~keep])
            kept_scores.append(scores[kept])
        highest_pruned, lowest_kept = np.concatenate(pruned_scores).max(), np.concatenate(kept_scores).min()
        assert highest_pruned <= lowest_kept * (1 + 1e-4) + 1e-12, (event, highest_pruned, lowest_kept)
        alive = {n: r0[f"keep/{n}"] for n in names}


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_rank_reports_the_same_global_sparsity_equal_to_the_target(dp_run, criterion):
    fits = [r["fits"][criterion] for r in _reports(dp_run)]
    assert fits[0]["history"] == fits[1]["history"]
    assert fits[0]["sparsity"] == fits[1]["sparsity"]
    assert [h["epoch"] for h in fits[0]["history"]] == list(PRUNE_EPOCHS)
    total = sum(int(np.prod(p.shape)) for n, p in MLP().named_parameters() if p.ndim >= 2)
    assert abs(fits[0]["sparsity"]["global"] - TARGET) <= 1 / total


@pytest.mark.parametrize("criterion", CRITERIA)
def test_one_collective_per_prune_event_and_none_per_step(dp_run, criterion):
    expected = 0 if criterion == "magnitude" else 1
    for r in _reports(dp_run):
        assert r["fits"][criterion]["collectives"] == ["all_reduce"] * expected * len(PRUNE_EPOCHS)
    for r0, r1 in _events(dp_run, criterion):
        assert int(r0["prune_collectives"]) == int(r1["prune_collectives"]) == expected


@pytest.mark.parametrize("criterion", CRITERIA)
def test_only_rank_0_writes_visualdl(dp_run, criterion):
    from visualdl import LogReader

    rank0, rank1 = _reports(dp_run)
    assert rank1["log_writers"] == []
    assert len(rank0["log_writers"]) == len(CRITERIA)
    files = sorted((dp_run / criterion / "vdl").rglob("vdlrecords.*"))
    assert len(files) == 1
    records = LogReader(file_path=str(files[0])).get_data("scalar", "pruning/sparsity")
    assert [r.id for r in records] == list(PRUNE_EPOCHS)


@pytest.mark.parametrize("criterion", RESUME_CRITERIA)
def test_resume_under_data_parallel(dp_run, criterion):
    reports = [r["resume"][criterion] for r in _reports(dp_run)]
    assert [r["saves"] for r in reports] == [[0, 1, 2, 3], []]    # only rank 0 writes checkpoints
    assert reports[0]["stopped_after"] == reports[1]["stopped_after"] == 2
    assert reports[0]["history"] == reports[1]["history"]
    assert [h["epoch"] for h in reports[0]["history"]] == [0, 1, 2, 3]
    assert reports[0]["sparsity"] == reports[1]["sparsity"] == pytest.approx(TARGET, abs=0.01)
    r0, r1 = (dict(np.load(dp_run / "resume" / criterion / f"rank{r}.npz")) for r in range(WORLD))
    names = _names(r0, "keep")
    assert len(names) == 2
    for name in names:
        for rank in (r0, r1):       # every rank restored rank 0's masks, and pruning went on from them
            assert np.array_equal(rank[f"restored/{name}"], r0[f"saved/{name}"])
            assert not np.any(rank[f"keep/{name}"] & ~rank[f"restored/{name}"])
        assert np.array_equal(r0[f"keep/{name}"], r1[f"keep/{name}"])
        # the checkpoint fell between two prune events; its g² sums were combined over the ranks, so the
        # resumed run prunes exactly as the uninterrupted one
        assert np.array_equal(r0[f"keep/{name}"], r0[f"uninterrupted/{name}"])
    for key in (k for k in r0 if k.startswith("weight/")):
        assert np.array_equal(r0[key], r1[key])
        np.testing.assert_allclose(r0[key], r0[f"uninterrupted_{key}"], rtol=1e-5, atol=1e-6)


def test_fleet_custom_loop_prunes_identically_with_one_collective_per_prune(dp_run):
    reports = [r["custom_loop"] for r in _reports(dp_run)]
    assert [r["collectives"] for r in reports] == [["all_reduce", "all_reduce"]] * WORLD
    assert reports[0]["sparsity"] == reports[1]["sparsity"] == pytest.approx(TARGET, abs=0.01)
    for epoch in (0, 1):
        r0, r1 = (dict(np.load(dp_run / "custom_loop" / f"rank{r}.epoch{epoch}.npz")) for r in range(WORLD))
        assert r0.keys() == r1.keys() and all(np.array_equal(r0[k], r1[k]) for k in r0)


def test_a_rank_without_batches_makes_every_rank_raise_instead_of_hanging(dp_run):
    errors = [r["no_batch_error"] for r in _reports(dp_run)]
    assert all(e is not None and "no batch was recorded since the last prune on 1 of 2 ranks" in e
               for e in errors), errors


def test_single_process_fit_makes_no_collective(monkeypatch):
    calls = []
    for name in COLLECTIVES:
        monkeypatch.setattr(paddle.distributed, name, lambda *a, _name=name, **k: calls.append(_name))
    pruning = PruningCallback(TARGET, PRUNE_EPOCHS, criterion="fisher", verbose=0)
    _model(MLP()).fit(classification_data(n=64), epochs=len(PRUNE_EPOCHS), batch_size=8, callbacks=[pruning],
                      verbose=0)
    assert paddle.distributed.get_world_size() == 1
    assert pruning.sparsity()["global"] == pytest.approx(TARGET, abs=0.01)
    assert calls == []


def test_example_under_launch(tmp_path):
    """examples/distributed.py with the README's command: 2 ranks, the same masks digest on both."""
    env = dict(os.environ, GLOG_minloglevel="2")
    if env.get("CUDA_VISIBLE_DEVICES") == "":
        del env["CUDA_VISIBLE_DEVICES"]   # launch reads an empty value as one GPU named "" and fails
    done = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD),
                           "--log_dir", "log", str(ROOT / "examples" / "distributed.py"), "--epochs", "3",
                           "--log-dir", "runs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    logs = [(tmp_path / "log" / f"workerlog.{r}").read_text() for r in range(WORLD)]
    assert done.returncode == 0, done.stdout[-3000:] + "".join(log[-3000:] for log in logs)
    lines = [re.search(rf"rank {r}/{WORLD}: eval accuracy [\d.]+, global sparsity ([\d.]+), masks (\w+)", log)
             for r, log in enumerate(logs)]
    assert all(lines), logs
    assert lines[0].group(1) == lines[1].group(1) == "0.9000"
    assert lines[0].group(2) == lines[1].group(2)
    assert len(list((tmp_path / "runs").rglob("vdlrecords.*"))) == 1


if __name__ == "__main__":
    paddle.distributed.spawn(_rank_main, args=(sys.argv[1],), nprocs=WORLD, backend="gloo")
