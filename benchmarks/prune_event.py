"""Cost of one prune event at scale: time and peak extra memory, against a full sort of all scores.

    GLOG_minloglevel=2 python benchmarks/prune_event.py [--sizes 1M 10M 50M] [--repeats 3] [--quick]
                                                          [--mask-dtypes bool float] [--out docs/prune_event.json]

Every case runs once per ``mask_dtype`` (``"bool"``: 1 byte per weight, ``"float"``: the parameter's dtype).

The network is 64 square ``Linear`` weights (no biases) totalling the given number of weights. For
``fisher`` the engine gets real squared gradients: ``Pruner.attach``, one backward, ``Pruner.step``.

* Time: ``Pruner.prune(sparsity=0.9)`` with global scope (scores → global threshold → masks → applied,
  plus the sparsity it returns), from the dense state, on a fresh ``Pruner`` and restored weights each
  repeat; then a later event, 0.9 → 0.95, as in gradual pruning. The baseline is the textbook full sort
  on the same data: fetch the weights (and the mean squared gradients), compute the scores, concatenate
  them, ``np.argsort``, build the masks. It does not apply them, so it is the cheaper of the two sides.
  The two are interleaved; medians are reported. ``selection_exact``: the engine pruned exactly k
  weights and none scores above a kept one; ``mask_differences_vs_full_sort`` counts the weights where
  the two masks differ (equal scores at the cut are ordered by position by the engine, arbitrarily by
  ``np.argsort``).
* Per-step cost of the masks, for the case's ``mask_dtype``: ``Pruner.step()`` (re-applies every mask in
  place: ``multiply_`` for float masks, ``masked_fill_`` for bool ones), and the gradient hooks' masking of
  one gradient per pruned parameter (a new tensor: ``grad * mask``, or ``masked_fill``).
* Memory (Linux): each case runs in a fresh process with ``MALLOC_MMAP_THRESHOLD_=16384``, so that
  freed blocks go back to the system and the resident set (``VmRSS``) shows what is really held. A
  small prune runs first, so that loading code and libraries is not counted. The peak is read from
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs`` just before the measured step. This
  counts every allocation, Paddle's and numpy's alike. Figures are multiples of the pruned
  parameters' own bytes, over a baseline taken with the network built and its gradients allocated:
  ``state_before_prune`` (the fisher accumulators), ``persistent_after_prune`` (all state the engine
  holds after the event), ``peak_during_prune`` (the highest point during ``prune``), and
  ``transient_of_prune`` = peak − persistent; ``transient_of_later_prune`` for the 0.9 → 0.95 event.
  ``numpy_peak_during_prune`` is tracemalloc's count of the numpy allocations alone (Paddle's allocator
  is not seen by tracemalloc).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import common
import numpy as np
import paddle

from paddle_prune_callback import Pruner

CRITERIA = ("magnitude", "fisher")
SPARSITY = 0.9
LATER_SPARSITY = 0.95
NUM_PARAMETERS = 64
BATCH = 8


def parse_size(text: str) -> int:
    scale = {"K": 10**3, "M": 10**6}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def build(size: int) -> paddle.nn.LayerList:
    width = round((size / NUM_PARAMETERS) ** 0.5)
    paddle.seed(0)
    return paddle.nn.LayerList([paddle.nn.Linear(width, width, bias_attr=False) for _ in range(NUM_PARAMETERS)])


def backward(net: paddle.nn.LayerList) -> None:
    width = net[0].weight.shape[0]
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((BATCH, width)).astype("float32"))
    paddle.add_n([(layer(x) ** 2).mean() for layer in net]).backward()


def make_pruner(net, criterion: str, mask_dtype: str = "float") -> Pruner:
    pruner = Pruner(net, criterion=criterion, mask_dtype=mask_dtype)
    if pruner.criterion.needs_gradients:
        pruner.attach()
        record_batch(net, pruner)
    return pruner


def record_batch(net, pruner: Pruner) -> None:
    """One backward and ``Pruner.step``: the squared gradients a gradient criterion needs to prune."""
    if pruner.criterion.needs_gradients:
        backward(net)
        pruner.step()
        net.clear_gradients(set_to_zero=True)


def host_scores(pruner: Pruner, name: str, w: np.ndarray, g2: dict) -> np.ndarray:
    """The criterion's scores of weights ``w`` (a host array) as a flat host array."""
    mean_g2 = None if g2.get(name) is None else paddle.to_tensor(g2[name])
    return pruner.criterion.score(paddle.to_tensor(w.ravel(), dtype="float32"), mean_g2).numpy()


def full_sort(pruner: Pruner, k: int) -> list:
    """The textbook global prune: every score in one array, sorted; the k lowest are pruned."""
    g2 = pruner.mean_sq_grads()
    scores = [host_scores(pruner, n, p.numpy(), g2) for n, p in pruner.parameters.items()]
    flat = np.concatenate(scores)
    del scores
    order = np.argsort(flat)
    keep = np.ones(flat.size, dtype=bool)
    keep[order[:k]] = False
    return np.split(keep, np.cumsum([int(np.prod(p.shape)) for p in pruner.parameters.values()])[:-1])


def num_to_prune(pruner: Pruner) -> int:
    return round(SPARSITY * sum(int(np.prod(p.shape)) for p in pruner.parameters.values()))


# ---------------------------------------------------------------------------------------- workers
def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak() -> None:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                      # resets VmHWM to the current VmRSS


def memory_worker(size: int, criterion: str, mask_dtype: str) -> dict:
    warm = make_pruner(build(NUM_PARAMETERS * 4), criterion, mask_dtype)   # loads the code paths once, not counted
    full_sort(warm, num_to_prune(warm))
    warm.prune(sparsity=SPARSITY)
    del warm
    net = build(size)
    backward(net)                         # gradients exist during training: part of the baseline
    net.clear_gradients(set_to_zero=True)
    param_bytes = sum(p.numpy().nbytes for p in net.parameters())
    gc.collect()
    base = status("VmRSS")
    pruner = make_pruner(net, criterion, mask_dtype)
    gc.collect()
    before = status("VmRSS")

    reset_peak()
    full_sort(pruner, num_to_prune(pruner))
    sort_peak = status("VmHWM") - before

    reset_peak()
    tracemalloc.start()
    pruner.prune(sparsity=SPARSITY)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = status("VmHWM")
    gc.collect()
    after = status("VmRSS")

    record_batch(net, pruner)
    gc.collect()
    reset_peak()
    later_before = status("VmRSS")
    pruner.prune(sparsity=LATER_SPARSITY)
    later_peak = status("VmHWM")
    ratio = lambda b: b / param_bytes
    return {"parameter_bytes": param_bytes,
            "state_before_prune": ratio(before - base),
            "persistent_after_prune": ratio(after - base),
            "peak_during_prune": ratio(peak - base),
            "transient_of_prune": ratio(peak - after),
            "numpy_peak_during_prune": ratio(numpy_peak),
            "transient_of_later_prune": ratio(later_peak - later_before),
            "full_sort_transient": ratio(sort_peak)}


def time_worker(size: int, criterion: str, repeats: int, mask_dtype: str) -> dict:
    net = build(size)
    backward(net)
    net.clear_gradients(set_to_zero=True)
    params = list(net.parameters())
    dense = [p.numpy() for p in params]
    prune_s, later_s, sort_s = [], [], []
    for r in range(repeats):
        for p, w in zip(params, dense):
            p.set_value(w)
        pruner = make_pruner(net, criterion, mask_dtype)
        k = num_to_prune(pruner)
        if r == repeats - 1:                    # the scores of the last repeat, to check the selection
            g2 = pruner.mean_sq_grads()
            scores = np.concatenate([host_scores(pruner, n, w, g2) for n, w in zip(pruner.parameters, dense)])
        start = time.perf_counter()             # the sort first: prune() consumes the squared gradients
        baseline_keep = full_sort(pruner, k)
        sort_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        sparsity = pruner.prune(sparsity=SPARSITY)["global"]
        prune_s.append(time.perf_counter() - start)
        keeps = pruner.keep
        engine_keep = [keeps[n] if n in keeps else np.ones(int(np.prod(p.shape)), bool)
                       for n, p in pruner.parameters.items()]     # a parameter left whole has no mask
        record_batch(net, pruner)
        start = time.perf_counter()
        later_sparsity = pruner.prune(sparsity=LATER_SPARSITY)["global"]
        later_s.append(time.perf_counter() - start)
        pruner.detach()
    mismatches = sum(int(np.count_nonzero(a != b)) for a, b in zip(engine_keep, baseline_keep))
    keep = np.concatenate(engine_keep)
    exact = int(keep.size - np.count_nonzero(keep)) == k and scores[~keep].max() <= scores[keep].min()
    step_ms, hook_ms = mask_step_costs(pruner)
    return {"num_parameters": len(params), "weights": sum(w.size for w in dense),
            "prune_seconds": statistics.median(prune_s), "full_sort_seconds": statistics.median(sort_s),
            "speedup": statistics.median(sort_s) / statistics.median(prune_s),
            "later_prune_seconds": statistics.median(later_s),
            "prune_seconds_all": prune_s, "full_sort_seconds_all": sort_s, "later_prune_seconds_all": later_s,
            "measured_sparsity": sparsity, "later_measured_sparsity": later_sparsity,
            "selection_exact": bool(exact), "mask_differences_vs_full_sort": mismatches,
            "step_ms": step_ms, "hook_ms": hook_ms}


def mask_step_costs(pruner: Pruner, repeats: int = 15) -> tuple[float, float]:
    """Median milliseconds to re-apply all masks once (``Pruner.step``), and for the gradient hooks to mask
    one gradient of every pruned parameter."""
    masks = pruner._masks
    grads = {n: paddle.ones_like(pruner.parameters[n]) for n in masks}

    def hooks():
        with paddle.no_grad():
            for n, mask in masks.items():
                mask.masked(grads[n])

    costs = []
    for fn in (pruner.step, hooks):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        costs.append(1000 * statistics.median(times))
    return costs[0], costs[1]


def run_worker(mode: str, size: int, criterion: str, repeats: int, mask_dtype: str) -> dict:
    env = dict(os.environ, GLOG_minloglevel="2")
    if mode == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "16384"
    cmd = [sys.executable, __file__, "--worker", mode, "--sizes", str(size), "--criterion", criterion,
           "--repeats", str(repeats), "--mask-dtypes", mask_dtype]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker for {size} weights, {criterion}, {mask_dtype} masks, failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "10M", "50M"], help="total prunable weights")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="toy size (300K weights), one repeat")
    parser.add_argument("--mask-dtypes", nargs="+", default=["bool", "float"], choices=("bool", "float"))
    parser.add_argument("--out", default=str(common.DOCS / "prune_event.json"))
    parser.add_argument("--worker", choices=("memory", "time"), help=argparse.SUPPRESS)
    parser.add_argument("--criterion", choices=CRITERIA, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        size = parse_size(args.sizes[0])
        mask_dtype = args.mask_dtypes[0]
        result = (memory_worker(size, args.criterion, mask_dtype) if args.worker == "memory"
                  else time_worker(size, args.criterion, args.repeats, mask_dtype))
        print(json.dumps(result))
        return
    sizes = ["300K"] if args.quick else args.sizes
    repeats = 1 if args.quick else args.repeats
    results = {"machine": common.machine(), "quick": args.quick, "repeats": repeats, "sparsity": SPARSITY,
               "num_parameters": NUM_PARAMETERS, "cases": []}
    for size in sizes:
        for criterion in CRITERIA:
            for mask_dtype in args.mask_dtypes:
                case = {"size": size, "criterion": criterion, "mask_dtype": mask_dtype,
                        **run_worker("time", parse_size(size), criterion, repeats, mask_dtype),
                        "memory": run_worker("memory", parse_size(size), criterion, repeats, mask_dtype)}
                results["cases"].append(case)
                mem = case["memory"]
                print(f"{size:>5} {criterion:<9} {mask_dtype:<5}: prune {case['prune_seconds']:.3f}s, full sort "
                      f"{case['full_sort_seconds']:.3f}s ({case['speedup']:.1f}x); peak extra "
                      f"{mem['peak_during_prune']:.2f}x of the parameters' bytes, persistent "
                      f"{mem['persistent_after_prune']:.2f}x; step {case['step_ms']:.2f} ms", flush=True)
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
