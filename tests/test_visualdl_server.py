"""The dashboards a person opens: a real ``visualdl`` server on the logs of one ``fit``, queried over HTTP.

The server is the ``visualdl`` command of this Python environment (or the one on PATH), started on a free
loopback port and stopped by its PID when the module's tests end, whether they pass or fail.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from paddle_prune_callback.visualdl_log import RUN_NAME, format_table

from test_visualdl_logs import EPOCHS, PRUNE_EPOCHS, tiny_fit


def visualdl_command():
    beside_python = os.path.join(os.path.dirname(sys.executable), "visualdl")
    return beside_python if os.access(beside_python, os.X_OK) else shutil.which("visualdl")


VISUALDL = visualdl_command()
pytestmark = pytest.mark.skipif(VISUALDL is None, reason="the `visualdl` command is not installed (it comes "
                                "with `pip install visualdl`); the server cannot be tested")
STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, logdir: str, log_path: str):
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log_path = log_path
        port = self.base.rsplit(":", 1)[1]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [VISUALDL, "--logdir", logdir, "--host", "127.0.0.1", "--port", port, "--disable-telemetry"],
                stdout=log, stderr=subprocess.STDOUT)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"visualdl exited with code {self.process.returncode}:\n{self.output()}")
            try:
                self.api("runs")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        pytest.fail(f"visualdl did not answer within {STARTUP_TIMEOUT_S} s:\n{self.output()}")

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def get(self, path: str, **query) -> bytes:
        url = f"{self.base}/app/api/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def api(self, path: str, **query):
        answer = json.loads(self.get(path, **query))
        assert answer["status"] == 0, answer
        return answer["data"]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    log_dir = str(tmp_path_factory.mktemp("vdl_server"))
    cb = tiny_fit(log_dir)
    server = Server(log_dir, os.path.join(str(tmp_path_factory.mktemp("vdl_server_out")), "visualdl.out"))
    try:
        server.wait_until_up()
        yield cb, server, log_dir, os.path.join(log_dir, RUN_NAME)
    finally:
        server.stop()


def test_both_runs_are_served(served):
    _, server, main_run, pruning_run = served
    assert sorted(server.api("runs")) == sorted([main_run, pruning_run])
    tags = server.api("scalar/tags")
    by_run = dict(zip(tags["runs"], tags["tags"]))
    assert {"train/loss", "train/acc", "eval/loss", "eval/acc"} <= set(by_run[main_run])
    assert {"pruning/sparsity", "pruning/target_sparsity", "pruning/eval_acc"} <= set(by_run[pruning_run])
    assert all(tag.startswith("pruning/") for tag in by_run[pruning_run])


def test_served_sparsity_equals_the_measured_history(served):
    cb, server, _, pruning_run = served
    rows = server.api("scalar/list", run=pruning_run, tag="pruning/sparsity")  # [wall ms, step, value]
    assert [step for _, step, _ in rows] == [h["epoch"] for h in cb.history] == list(range(EPOCHS))
    np.testing.assert_allclose([v for _, _, v in rows], [h["sparsity"] for h in cb.history], rtol=1e-6)
    assert rows[-1][2] == pytest.approx(cb.sparsity()["global"], rel=1e-6)


def test_served_per_parameter_sparsity(served):
    cb, server, _, pruning_run = served
    final = {n: s for n, s in cb.sparsity().items() if n != "global"}
    assert final
    for name, sparsity in final.items():
        rows = server.api("scalar/list", run=pruning_run, tag=f"pruning/sparsity/{name}")
        assert len(rows) == EPOCHS
        assert rows[-1][2] == pytest.approx(sparsity, rel=1e-6)


def test_train_loss_from_paddle_visualdl_is_served_beside_it(served):
    _, server, main_run, _ = served
    rows = server.api("scalar/list", run=main_run, tag="train/loss")
    batches_per_epoch = 256 // 64
    assert [step for _, step, _ in rows] == list(range(1, EPOCHS * batches_per_epoch + 1))
    assert all(np.isfinite(v) and v > 0 for _, _, v in rows)


def test_served_histograms_at_each_prune_epoch(served):
    _, server, _, pruning_run = served
    for tag in ("pruning/log10_score", "pruning/surviving_weights"):
        rows = server.api("histogram/list", run=pruning_run, tag=tag)  # [wall ms, step, [[lo, hi, count]…]]
        assert [step for _, step, _ in rows] == PRUNE_EPOCHS, tag
        assert all(sum(count for _, _, count in bins) > 0 for _, _, bins in rows), tag


def test_served_summary_text(served):
    cb, server, _, pruning_run = served
    steps = server.api("text/list", run=pruning_run, tag="pruning/summary")
    assert [s["step"] for s in steps] == [EPOCHS - 1]
    text = server.get("text/text", run=pruning_run, tag="pruning/summary", index=0).decode("utf-8")
    table = format_table(cb.pruner.table(), cb.sparsity()["global"])
    assert text == table


def test_hparams_view_compares_runs_by_sparsity_and_accuracy(served):
    cb, server, main_run, pruning_run = served
    trials = server.api("hparams/list")
    assert [t["name"] for t in trials] == [pruning_run]
    hparams, metrics = trials[0]["hparams"], trials[0]["metrics"]
    assert hparams["criterion"] == cb.criterion and hparams["scope"] == cb.scope
    assert hparams["schedule"] == cb.schedule and hparams["target_sparsity"] == pytest.approx(cb.target_sparsity)
    assert metrics["pruning/sparsity"] == pytest.approx(cb.sparsity()["global"], rel=1e-6)
    last_eval_acc = server.api("scalar/list", run=main_run, tag="eval/acc")[-1][2]
    assert metrics["pruning/eval_acc"] == pytest.approx(last_eval_acc, rel=1e-6)
    assert set(metrics) == {"pruning/sparsity", "pruning/eval_loss", "pruning/eval_acc"}
    indicators = server.api("hparams/indicators")
    assert {h["name"] for h in indicators["hparams"]} >= {"criterion", "scope", "schedule", "target_sparsity"}
    assert {m["name"] for m in indicators["metrics"]} == set(metrics)
