"""The examples run as a user runs them, and report what they claim."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, cwd):
    env = dict(os.environ, GLOG_minloglevel="2")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quickstart(tmp_path):
    out = run("quickstart.py", cwd=tmp_path)
    accuracy, sparsity = map(float, re.search(r"eval accuracy ([\d.]+), global sparsity ([\d.]+)", out).groups())
    assert sparsity == 0.9 and accuracy > 0.8
    assert list((tmp_path / "runs" / "quickstart" / "pruning").glob("vdlrecords.*.log"))


def test_custom_loop(tmp_path):
    out = run("custom_loop.py", cwd=tmp_path)
    last = re.findall(r"sparsity ([\d.]+) \(target ([\d.]+)\)", out)[-1]
    assert last == ("0.800", "0.800")


def test_digits_cnn_short_run(tmp_path):
    out = run("digits_cnn.py", "--epochs", "3", "--log-dir", str(tmp_path / "runs"), cwd=tmp_path)
    rows = dict((m[0], (float(m[1]), float(m[2]))) for m in re.findall(r"^(\w+)\s+([\d.]+)\s+([\d.]+)", out, re.M))
    criteria = {"magnitude", "gradient", "fisher", "hybrid"}
    assert set(rows) == {"dense", *criteria}
    assert rows["dense"][1] == 0.0 and all(rows[c][1] == 0.9 for c in criteria)
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"dense", *criteria}


def test_slim_resnet_short_run(tmp_path):
    out = run("slim_resnet.py", "--epochs", "2", "--images", "32", "--out", str(tmp_path / "model"), cwd=tmp_path)
    assert "layer1.0.conv1: 64 -> 32 channels" in out
    diffs = re.search(r"outputs differ by ([\d.e+-]+) \(exported: ([\d.e+-]+)\)", out).groups()
    assert all(float(d) < 1e-4 for d in diffs)
    assert (tmp_path / "model.pdiparams").exists()


def test_readme_console_table_is_a_fresh_run_of_the_example(tmp_path):
    """The console summary shown under "Install and run" is what the example's fisher run prints."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from digits_cnn import train; "
            "train('fisher', 0.9, verbose=1)")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, GLOG_minloglevel="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    printed = re.search(r"^PruningCallback: final global sparsity.*?^total .*?$", done.stdout, re.M | re.S).group(0)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"```\n(PruningCallback: final global sparsity.*?)\n```", readme, re.S).group(1)
    assert shown == printed, f"README.md's console table differs from a fresh run; it printed:\n{printed}"
