"""What the pruning logger writes, read back with ``visualdl.LogReader``: every tag and value, checked
against what the callback measured; and the console summary at train end."""
from __future__ import annotations

import glob
import os
import time

import numpy as np
import paddle
import pytest
from conftest import MaskProbe

from paddle_prune_callback import PruningCallback
from paddle_prune_callback.visualdl_log import RUN_NAME, SparsityLogger, format_table

visualdl = pytest.importorskip("visualdl")

EPOCHS = 4
PRUNE_EPOCHS = [0, 1, 2]
TARGET = 0.6


def tiny_model(seed=0):
    """A 16-32-4 MLP on a learnable random task: (model, 256 training samples, 128 eval samples)."""
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(384, 16)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(16, 4)), axis=1).astype("int64")[:, None]
    data = lambda a, b: paddle.io.TensorDataset([paddle.to_tensor(a), paddle.to_tensor(b)])
    net = paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 4))
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(learning_rate=1e-2, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model, data(x[:256], y[:256]), data(x[256:], y[256:])


def tiny_fit(log_dir, verbose=0):
    """One ``fit`` with eval data, pruned by a PruningCallback logging to ``log_dir``, with
    ``paddle.callbacks.VisualDL`` on the same ``log_dir`` when one is given; returns the callback."""
    model, train_data, eval_data = tiny_model()
    cb = PruningCallback(target_sparsity=TARGET, prune_epochs=PRUNE_EPOCHS, criterion="fisher", log_dir=log_dir,
                         verbose=verbose)
    probe = MaskProbe(cb)
    callbacks = [cb, probe] + ([paddle.callbacks.VisualDL(log_dir=log_dir)] if log_dir is not None else [])
    model.fit(train_data, eval_data, epochs=EPOCHS, batch_size=64, verbose=0, callbacks=callbacks)
    assert probe.updates_checked == (EPOCHS - 1) * 4     # every batch after the first prune
    return cb


def only_log_file(directory):
    files = glob.glob(os.path.join(directory, "vdlrecords.*.log"))
    assert len(files) == 1, f"expected one VisualDL log file in {directory}, found {files}"
    return files[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("vdl_logs"))
    cb = tiny_fit(log_dir)
    return cb, log_dir, visualdl.LogReader(file_path=only_log_file(os.path.join(log_dir, RUN_NAME)))


def scalars(reader, tag):
    records = reader.get_data("scalar", tag)
    assert records, f"no values for scalar tag {tag!r}"
    return [r.id for r in records], np.array([r.value for r in records], dtype=np.float32)


def test_tags_are_all_in_the_pruning_group(fitted):
    cb, _, reader = fitted
    tags = reader.get_tags()
    params = [n for n in cb.sparsity() if n != "global"]
    assert params
    assert set(tags["scalar"]) == {"pruning/sparsity", "pruning/target_sparsity", "pruning/eval_loss",
                                   "pruning/eval_acc", *(f"pruning/sparsity/{n}" for n in params)}
    assert set(tags["histogram"]) == {"pruning/log10_score", "pruning/surviving_weights"}
    assert tags["text"] == ["pruning/summary"]
    assert tags["hyper_parameters"] == ["hparam"]


def test_global_sparsity_equals_the_measured_history(fitted):
    cb, _, reader = fitted
    assert [h["epoch"] for h in cb.history] == list(range(EPOCHS))
    steps, values = scalars(reader, "pruning/sparsity")
    assert steps == list(range(EPOCHS))
    np.testing.assert_array_equal(values, np.float32([h["sparsity"] for h in cb.history]))
    assert values[-1] == np.float32(cb.sparsity()["global"])
    assert values[0] > 0 and values[-1] == pytest.approx(TARGET, abs=0.01)


def test_target_sparsity_equals_the_schedule(fitted):
    cb, _, reader = fitted
    targeted = [h for h in cb.history if h["target_sparsity"] is not None]
    assert [h["epoch"] for h in targeted if h["pruned"]] == PRUNE_EPOCHS
    steps, values = scalars(reader, "pruning/target_sparsity")
    assert steps == [h["epoch"] for h in targeted]
    np.testing.assert_array_equal(values, np.float32([h["target_sparsity"] for h in targeted]))
    assert values.max() == np.float32(TARGET)


def test_per_parameter_sparsity_ends_at_the_measured_values(fitted):
    cb, _, reader = fitted
    final = {n: s for n, s in cb.sparsity().items() if n != "global"}
    assert len(final) == 2
    for name, sparsity in final.items():
        steps, values = scalars(reader, f"pruning/sparsity/{name}")
        assert steps == list(range(EPOCHS))
        assert values[-1] == np.float32(sparsity)
        assert np.all(np.diff(values) >= 0), f"{name}: pruned weights came back: {values}"


def test_histograms_at_each_prune_epoch(fitted):
    _, _, reader = fitted
    for tag in ("pruning/log10_score", "pruning/surviving_weights"):
        records = reader.get_data("histogram", tag)
        assert [r.id for r in records] == PRUNE_EPOCHS, tag
        for r in records:
            counts, edges = np.array(r.histogram.hist), np.array(r.histogram.bin_edges)
            assert counts.sum() > 0 and np.isfinite(edges).all() and edges[0] < edges[-1], tag


def test_surviving_weight_histograms_shrink_as_pruning_goes_on(fitted):
    _, _, reader = fitted
    totals = [sum(r.histogram.hist) for r in reader.get_data("histogram", "pruning/surviving_weights")]
    assert len(totals) == len(PRUNE_EPOCHS)
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[-1]


def test_summary_table_at_train_end(fitted):
    cb, _, reader = fitted
    records = reader.get_data("text", "pruning/summary")
    assert [r.id for r in records] == [EPOCHS - 1]
    text = records[0].text.encoded_text_string
    table = format_table(cb.pruner.table(), cb.sparsity()["global"])
    assert text == table
    for name, shape, weights, pruned, sparsity in cb.pruner.table():
        assert f"{weights:,}" in text and f"{pruned:,}" in text and f"{sparsity:.2%}" in text
        assert name in text and "×".join(map(str, shape)) in text
    assert "parameter" in text and "sparsity" in text and f"{cb.sparsity()['global']:.2%}" in text


def test_hparams_and_their_metrics(fitted):
    _, _, reader = fitted
    records = reader.get_data("hyper_parameters", "hparam")
    assert len(records) == 1
    hparam = records[0].hparam
    values = {h.name: getattr(h, h.WhichOneof("type")) for h in hparam.hparamInfos}
    assert values["criterion"] == "fisher" and values["scope"] == "global"
    assert values["schedule"] == "polynomial" and values["prune_epochs"] == "0,1,2"
    assert values["target_sparsity"] == pytest.approx(TARGET)
    metrics = [m.name for m in hparam.metricInfos]
    assert metrics == ["pruning/sparsity", "pruning/eval_loss", "pruning/eval_acc"]
    # VisualDL's hparams view reads each metric's last value from a scalar tag of the same run.
    assert set(metrics) <= set(reader.get_tags()["scalar"])


def test_eval_metrics_equal_paddle_visualdl_eval_tags(fitted):
    _, log_dir, reader = fitted
    paddle_run = visualdl.LogReader(file_path=only_log_file(log_dir))
    assert {"train/loss", "train/acc", "eval/loss", "eval/acc"} <= set(paddle_run.get_tags()["scalar"])
    for name in ("loss", "acc"):
        steps, values = scalars(reader, f"pruning/eval_{name}")
        assert steps == list(range(EPOCHS))
        paddle_steps, paddle_values = scalars(paddle_run, f"eval/{name}")
        assert steps == paddle_steps
        np.testing.assert_array_equal(values, paddle_values)


def test_a_second_fit_appends_to_the_same_run(tmp_path):
    cb = PruningCallback(target_sparsity=0.5, prune_epochs=[0, 1], criterion="magnitude", log_dir=str(tmp_path),
                         verbose=0)
    model, train_data, _ = tiny_model()
    model.fit(train_data, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    time.sleep(1.1)  # VisualDL names a new log file by the second: a new file would get a new name now
    model.fit(train_data, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    run = os.path.join(tmp_path, RUN_NAME)
    only_log_file(run)
    # Read the directory as the server does: it shows the newest file of each run only.
    reader = visualdl.LogReader(logdir=str(tmp_path))
    records = reader.get_log_data("scalar", run, "pruning%sparsity")  # [step, tag, wall time, value] rows
    assert [r[0] for r in records] == [0, 1, 2, 3]
    np.testing.assert_array_equal([r[3] for r in records], np.float32([h["sparsity"] for h in cb.history]))


def test_console_summary_printed_once_at_train_end(capsys):
    cb = tiny_fit(None, verbose=1)
    out = capsys.readouterr().out
    final = cb.sparsity()["global"]
    assert out.count("PruningCallback: final global sparsity") == 1
    assert f"PruningCallback: final global sparsity {final:.2%}" in out
    table = format_table(cb.pruner.table(), final)
    assert out.count(table) == 1
    rows = cb.pruner.table()
    assert rows
    for name, _, weights, pruned, sparsity in rows:
        assert [line for line in out.splitlines() if line.startswith(name) and f"{pruned:,}" in line
                and f"{weights:,}" in line and line.endswith(f"{sparsity:.2%}")]


def test_console_silent_with_verbose_0(capsys):
    tiny_fit(None, verbose=0)
    assert capsys.readouterr().out == ""


def test_eval_metrics_are_logged_only_while_a_fit_is_logging(tmp_path):
    logger = SparsityLogger(str(tmp_path))
    logger.log_eval(0, {"acc": 0.5})  # e.g. model.evaluate(..., callbacks=[cb]) before any fit
    assert not os.path.exists(logger.log_dir)
    logger.log_epoch(0, {"w": 0.5, "global": 0.5}, 0.5)
    logger.log_eval(0, {"loss": [np.float32(0.25)], "acc": np.float64(0.75), "note": "not a number"})
    logger.close()
    reader = visualdl.LogReader(file_path=only_log_file(logger.log_dir))
    assert set(reader.get_tags()["scalar"]) == {"pruning/sparsity", "pruning/target_sparsity",
                                                "pruning/sparsity/w", "pruning/eval_loss", "pruning/eval_acc"}
    for tag, expected in (("pruning/eval_loss", 0.25), ("pruning/eval_acc", 0.75)):
        steps, values = scalars(reader, tag)
        assert steps == [0]
        np.testing.assert_array_equal(values, np.float32([expected]))


def test_a_resumed_run_continues_the_newest_log_file(tmp_path):
    run = os.path.join(tmp_path, RUN_NAME)
    with visualdl.LogWriter(logdir=run, file_name="vdlrecords.1000000000.log") as before_the_crash:
        for epoch in (0, 1):
            before_the_crash.add_scalar("pruning/sparsity", 0.25 * epoch, epoch)
    logger = SparsityLogger(str(tmp_path))
    logger.log_epoch(2, {"w": 0.5, "global": 0.5}, 0.5)
    logger.close()
    assert only_log_file(run).endswith("vdlrecords.1000000000.log")
    steps, values = scalars(visualdl.LogReader(file_path=only_log_file(run)), "pruning/sparsity")
    assert steps == [0, 1, 2]
    np.testing.assert_array_equal(values, np.float32([0.0, 0.25, 0.5]))


def test_a_run_resumed_from_its_checkpoint_keeps_one_log_file(tmp_path):
    log_dir, state_dir = str(tmp_path / "logs"), str(tmp_path / "ckpt")
    # Fresh parameter and optimizer-state names for each part, as in the new process that resumes a run.
    with paddle.utils.unique_name.guard():
        model, train_data, _ = tiny_model()
        first = PruningCallback(target_sparsity=0.5, prune_epochs=[0, 1], criterion="magnitude", log_dir=log_dir,
                                state_dir=state_dir, verbose=0)
        model.fit(train_data, epochs=2, batch_size=64, verbose=0, callbacks=[first])
    time.sleep(1.1)  # a new log file would get a new name now
    with paddle.utils.unique_name.guard():
        model, train_data, _ = tiny_model()
        resumed = PruningCallback.resume(state_dir, model, log_dir=log_dir, verbose=0)
        model.fit(train_data, epochs=2, batch_size=64, verbose=0, callbacks=[resumed])
    run = os.path.join(log_dir, RUN_NAME)
    steps, values = scalars(visualdl.LogReader(file_path=only_log_file(run)), "pruning/sparsity")
    assert steps == [0, 1, 2, 3] == [h["epoch"] for h in resumed.history]
    np.testing.assert_array_equal(values, np.float32([h["sparsity"] for h in resumed.history]))
    assert values[-1] == np.float32(resumed.sparsity()["global"]) and values[-1] > values[0] > 0
