"""CPU latency of a channel-pruned network, masked (zeros in place) vs slimmed (channels removed).

    python benchmarks/channel_latency.py [--quick] [--out docs/channel_latency.json]

For each model and fraction of channels, the network is pruned with ``pattern="channel"`` (magnitude,
``scope="layer"``: the same fraction of every prunable group), copied, and the copy slimmed. Forward
passes in eval mode under ``no_grad``, batch 1 and 32, are timed as interleaved A/B pairs whose order
alternates from repeat to repeat; the result is the median of the per-repeat ratios masked / slimmed.
Run it alone on the machine (``flock /work/bench.lock ...``): absolute times on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import paddle
from common import DOCS, machine, write_json
from digits_cnn import DigitsCNN

from paddle_prune_callback import Pruner, slim

MODELS = {
    "resnet18": (lambda: paddle.vision.models.resnet18(num_classes=10), [3, 32, 32]),
    "digits_cnn": (DigitsCNN, [1, 8, 8]),
}


def pair(name: str, fraction: float, seed: int = 0):
    """(masked network, slimmed copy, slim report) with ``fraction`` of every prunable group's channels."""
    make, shape = MODELS[name]
    paddle.seed(seed)
    masked = make()
    x = paddle.randn([2] + shape)
    Pruner(masked, "magnitude", scope="layer", pattern="channel", example_inputs=x).prune(sparsity=fraction)
    slimmed = make()
    slimmed.set_state_dict(masked.state_dict())
    report = slim(slimmed, x)
    masked.eval()
    slimmed.eval()
    return masked, slimmed, report


def per_call(net, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        net(x)
    return (time.perf_counter() - start) / calls


def measure(masked, slimmed, x, repeats: int, calls: int) -> dict:
    with paddle.no_grad():
        for net in (masked, slimmed):
            per_call(net, x, 2)   # warm up
        times = {"masked": [], "slimmed": []}
        for r in range(repeats):
            order = ("masked", "slimmed") if r % 2 == 0 else ("slimmed", "masked")
            for which in order:
                times[which].append(per_call(masked if which == "masked" else slimmed, x, calls))
    ratios = [m / s for m, s in zip(times["masked"], times["slimmed"])]
    return {"masked_ms": [t * 1e3 for t in times["masked"]], "slimmed_ms": [t * 1e3 for t in times["slimmed"]],
            "ratios": ratios, "median_ratio": statistics.median(ratios),
            "median_masked_ms": statistics.median(times["masked"]) * 1e3,
            "median_slimmed_ms": statistics.median(times["slimmed"]) * 1e3}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy size: a few seconds, for the tests")
    parser.add_argument("--out", default=str(DOCS / "channel_latency.json"))
    args = parser.parse_args(argv)
    fractions = [0.5] if args.quick else [0.25, 0.5, 0.75]
    batches = [1] if args.quick else [1, 32]
    repeats, calls = (1, 1) if args.quick else (7, 5)
    paddle.set_device("cpu")
    results = {"quick": args.quick, "machine": machine(), "repeats": repeats, "calls_per_timing": calls,
               "cases": []}
    for name, (_, shape) in MODELS.items():
        if args.quick and name != "digits_cnn":
            continue
        for fraction in fractions:
            masked, slimmed, report = pair(name, fraction)
            for batch in batches:
                x = paddle.randn([batch] + shape)
                with paddle.no_grad():
                    diff = float(np.abs(masked(x).numpy() - slimmed(x).numpy()).max())
                case = {"model": name, "fraction": fraction, "batch": batch, "max_abs_diff": diff,
                        "params": [report.params_before, report.params_after],
                        "flops": [report.flops_before, report.flops_after]}
                case.update(measure(masked, slimmed, x, repeats, calls))
                results["cases"].append(case)
                print(f"{name:10s} {fraction:.0%} of channels, batch {batch:2d}: masked "
                      f"{case['median_masked_ms']:8.2f} ms, slimmed {case['median_slimmed_ms']:8.2f} ms, "
                      f"{case['median_ratio']:.2f}x (FLOPs {report.flops_after / report.flops_before:.0%})",
                      flush=True)
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
