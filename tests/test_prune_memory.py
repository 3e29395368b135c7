"""Peak memory of a prune event on CPU, measured in a fresh process (VmHWM after clear_refs, as
benchmarks/prune_event.py does): the event holds one parameter's scores at a time plus the candidates
near the cut, never all scores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent("""
    import gc, json, sys
    import paddle
    sys.path.insert(0, sys.argv[1])
    from paddle_prune_callback import Pruner

    def status(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    paddle.seed(0)
    net = paddle.nn.LayerList([paddle.nn.Linear(256, 256, bias_attr=False) for _ in range(64)])
    param_bytes = sum(int(p.size) * 4 for p in net.parameters())
    pruner = Pruner(net, criterion=sys.argv[2]).attach()
    def batch():
        x = paddle.randn([8, 256])
        for layer in net:
            x = paddle.tanh(layer(x))
        x.sum().backward()
        pruner.step()
        net.clear_gradients()
    batch()
    gc.collect()
    reset_peak()
    pruner.prune(sparsity=0.5)
    first_peak = status("VmHWM")
    gc.collect()
    first_after = status("VmRSS")
    batch()
    gc.collect()
    before = status("VmRSS")
    reset_peak()
    pruner.prune(sparsity=0.55)
    peak = status("VmHWM")
    print(json.dumps({"transient": (peak - before) / param_bytes, "param_bytes": param_bytes,
                      "first_transient": (first_peak - first_after) / param_bytes}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("criterion", ["magnitude", "fisher"])
def test_a_prune_event_never_holds_all_scores(criterion):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, GLOG_minloglevel="2", MALLOC_MMAP_THRESHOLD_="16384")
    done = subprocess.run([sys.executable, "-c", WORKER, root, criterion], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # All scores at once would be 1.0x of the weights' bytes (float32). What the event may hold: the keep
    # masks the pattern returns (1 byte per weight, 0.25x), one parameter's scores and temporaries
    # (64 parameters: 1/64 = 0.016x each), the candidates near the cut, and the old values of the 5 % newly
    # pruned weights until the event has completed (0.05x).
    assert result["transient"] < 0.5, result
    # The first event (0 -> 0.5) holds, beyond the masks it leaves, the old values of the 50 % newly
    # pruned weights until it has completed (0.5x; an atomic prune) and one parameter's temporaries: the
    # newly pruned positions are not held a second time beside a first mask (measured 0.49-0.50x; the
    # engine that held them measured 0.76-0.78x).
    assert result["first_transient"] < 0.62, result
