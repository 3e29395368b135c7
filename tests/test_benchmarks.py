"""The benchmark scripts run at toy size (``--quick``) and write results of the expected shape; the benchmark
tables in docs/ are the ones ``benchmarks/report.py`` and the scripts' ``--table`` make from the committed result files.

No timing is asserted: these only keep the scripts working.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402  (benchmarks/report.py, after the path is set)


def run(script: str, out: Path, *args: str) -> dict:
    env = dict(os.environ, GLOG_minloglevel="2")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("benchmarks")
    for name in ("overhead", "prune_event", "accuracy"):
        run(f"{name}.py", out / f"{name}.json")
    run("overhead.py", out / "overhead_hybrid.json", "--cases", "digits_cnn", "--criteria", "fisher", "hybrid")
    return out


def load(results: Path, name: str) -> dict:
    return json.loads((results / f"{name}.json").read_text())


def test_overhead(results):
    data = load(results, "overhead")
    assert data["quick"] and data["machine"]["paddle"]
    assert set(data["cases"]) == {"digits_cnn", "resnet18_cifar", "resnet18_imagenet_stem"}
    for case in data["cases"].values():
        assert case["repeats"] == len(case["dense_seconds"]) == 1
        assert set(case["criteria"]) == {"magnitude", "fisher"}
        for r in case["criteria"].values():
            assert len(r["ratios"]) == 1 and r["median_ratio"] == r["ratios"][0] > 0
            assert r["prune_events_share"] > 0 and r["mask_reapply_share"] > 0 and r["gradient_hooks_share"] >= 0
            assert r["final_sparsity"] == pytest.approx(0.9, abs=1e-3)
        assert case["criteria"]["fisher"]["gradient_hooks_share"] > 0      # fisher's hooks run from the start


def test_prune_event(results):
    data = load(results, "prune_event")
    assert [(c["size"], c["criterion"], c["mask_dtype"]) for c in data["cases"]] == [
        ("300K", "magnitude", "bool"), ("300K", "magnitude", "float"), ("300K", "fisher", "bool"), ("300K", "fisher", "float")]
    for c in data["cases"]:
        assert c["weights"] > 4 * 65536 and c["num_parameters"] == 64     # large enough to sample the cut
        assert c["selection_exact"]
        assert c["measured_sparsity"] == pytest.approx(0.9, abs=1e-4)
        assert c["later_measured_sparsity"] == pytest.approx(0.95, abs=1e-4)
        assert c["prune_seconds"] > 0 and c["full_sort_seconds"] > 0 and c["step_ms"] > 0 and c["hook_ms"] > 0
        m = c["memory"]
        assert all(math.isfinite(v) for v in m.values())
        assert m["peak_during_prune"] >= m["persistent_after_prune"]
        # float masks are 1.0x of the weights' bytes alone, bool ones 0.25x
        assert m["persistent_after_prune"] > (1.0 if c["mask_dtype"] == "float" else 0.2)
    fisher = data["cases"][2]["memory"]
    assert fisher["state_before_prune"] > 0.9                                 # the float32 accumulators


def test_accuracy(results):
    data = load(results, "accuracy")
    assert data["sparsities"] == [0.9, 0.98] and data["seeds"] == [0] and data["complete"]
    assert data["criteria"] == ["magnitude", "gradient", "fisher", "hybrid"]
    assert {t: s["test_images"] for t, s in data["tasks"].items()} == {"digits": 360, "signals": 200}
    runs = {(r["task"], r["criterion"], r["target_sparsity"]): r for r in data["runs"]}
    assert len(runs) == len(data["runs"]) == 2 * (1 + 2 * 4)
    for r in data["runs"]:
        assert 0 <= r["accuracy"] <= 1
        assert r["sparsity"] == pytest.approx(r["target_sparsity"], abs=1e-3)
        if r["criterion"] != "dense":       # per layer, measured from the weights; the global figure agrees
            assert r["layer_sparsity"]["global"] == pytest.approx(r["sparsity"], abs=1e-6)
            assert all(0 <= v < 1 for v in r["layer_sparsity"].values())
    # The paired differences and the default, recomputed from the runs.
    cells = {}
    for task, summary in data["tasks"].items():
        n = summary["test_images"]
        for c in data["criteria"]:
            for s in data["sparsities"]:
                delta = round(n * (runs[task, c, s]["accuracy"] - runs[task, "magnitude", s]["accuracy"]))
                paired = summary["paired_vs_magnitude"][c][str(s)]
                assert paired["mean_delta_points"] == pytest.approx(100 * delta / n)
                assert (paired["wins"], paired["ties"], paired["losses"]) == (int(delta > 0), int(delta == 0),
                                                                              int(delta < 0))
                cells.setdefault(c, []).append(100 * delta / n)
        assert set(summary["layer_sparsity"]["hybrid"]) == {"0.98"}
    best = max(data["criteria"], key=lambda c: sum(cells[c]))
    expected = "magnitude" if min(cells[best]) < -0.5 else best
    assert data["default"]["best"] == best and data["default"]["default"] == expected
    assert (results / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overhead_of_hybrid_beside_fisher(results):
    data = load(results, "overhead_hybrid")
    assert set(data["cases"]) == {"digits_cnn"}
    assert set(data["cases"]["digits_cnn"]["criteria"]) == {"fisher", "hybrid"}


def test_report_tables_from_the_quick_results(results):
    text = report.report(results)
    assert "### Training overhead" in text and "| `digits_cnn` | fisher |" in text
    assert "| 300K (295,936 in 64) | magnitude | bool |" in text and "| 300K | fisher |" in text
    assert "| hybrid | " in text and "Default, by the rule fixed before the runs" in text
    doc = report.accuracy_report(results)
    assert "### signals" in doc and "| `digits_cnn` |" in doc


@pytest.mark.parametrize("path, make", [("docs/benchmarks.md", report.report),
                                        ("docs/accuracy.md", report.accuracy_report)])
def test_committed_docs_show_the_tables_of_the_committed_results(path, make):
    text = (ROOT / path).read_text()
    start = text.index(report.BEGIN) + len(report.BEGIN)
    assert text[start:text.index(report.END)].strip() == make().strip(), (
        f"the tables in {path} differ from docs/*.json: run python benchmarks/report.py --write")


def test_sparse_size(tmp_path):
    data = run("sparse_size.py", tmp_path / "sparse_size.json")
    assert data["quick"] and data["repeats"] == 1
    rows = {r["case"]: r for r in data["rows"]}
    assert set(rows) == {"0.9", "2:4"}
    assert all(r["lossless_bitwise"] for r in rows.values())
    assert rows["0.9"]["encodings"] == ["bitmask"] and "2:4" in rows["2:4"]["encodings"]
    assert rows["0.9"]["ratio"]["sparse"] > 5 and rows["0.9"]["ratio"]["sparse_fp16"] > rows["0.9"]["ratio"]["sparse"]
    assert 0 < rows["2:4"]["fp16_max_abs_error"] < 1e-2


@pytest.mark.parametrize("script, page, what", [("sparse_size", "docs/sparse_checkpoints.md", "sparse checkpoint"),
                                                 ("nm_accuracy", "docs/nm_sparsity.md", "2:4 accuracy")])
def test_docs_show_the_table_of_the_committed_results(script, page, what):
    module = importlib.import_module(script)
    table = module.table(json.loads((ROOT / "docs" / f"{script}.json").read_text()))
    text = (ROOT / page).read_text()
    start = text.index(module.BEGIN) + len(module.BEGIN)
    assert text[start:text.index(module.END)].strip() == table, (
        f"{page}'s {what} table differs from docs/{script}.json: paste "
        f"`python benchmarks/{script}.py --table`")


def test_nm_accuracy(tmp_path):
    data = run("nm_accuracy.py", tmp_path / "nm_accuracy.json")
    assert data["quick"] and data["seeds"] == [0] and data["epochs"] == 3 and data["test_images"] == 360
    assert [r["run"] for r in data["runs"]] == ["dense", "magnitude", "fisher", "asp_late", "asp_early"]
    for r in data["runs"]:
        assert 0 <= r["accuracy"] <= 1
        if r["run"] != "dense":
            assert r["asp_check_sparsity"] and r["sparsity_of_2_4_weights"] == pytest.approx(0.5, abs=1e-3)


def test_channel_latency(tmp_path):
    data = run("channel_latency.py", tmp_path / "channel_latency.json")
    assert data["quick"]
    assert [(c["model"], c["fraction"], c["batch"]) for c in data["cases"]] == [("digits_cnn", 0.5, 1)]
    case = data["cases"][0]
    assert case["max_abs_diff"] < 1e-5 and case["median_ratio"] == case["ratios"][0] > 0
    assert case["params"][1] < case["params"][0] and case["flops"][1] < case["flops"][0]


def test_channel_accuracy(tmp_path):
    data = run("channel_accuracy.py", tmp_path / "channel_accuracy.json")
    assert data["quick"] and data["fractions"] == [0.5] and list(data["curve"]) == ["magnitude"]
    assert [(r["criterion"], r["fraction"], r["score"], r["normalize"]) for r in data["runs"]] == [
        ("magnitude", 0.5, "group", False), ("fisher", 0.75, "group", True)]
    assert all(0 <= r["accuracy"] <= 1 for r in data["runs"]) and list(data["rules_at_0.75"]) == ["fisher/group/mean"]
    for run_ in data["runs"]:     # the target fraction of the 176 prunable channels is gone
        assert sum(run_["kept_channels"].values()) == 176 - round(run_["fraction"] * 176)
    assert (tmp_path / "channel_accuracy.png").exists()
