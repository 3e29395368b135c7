"""Training overhead of PruningCallback: whole ``Model.fit`` wall time with the callback vs without it.

    GLOG_minloglevel=2 python benchmarks/overhead.py [--repeats N] [--cases ...] [--criteria ...] [--quick]
                                                       [--out docs/overhead.json]

Three cases, each pruned to 90% with the ``magnitude`` and ``fisher`` criteria (or those of ``--criteria``:
``--criteria fisher hybrid --out docs/overhead_hybrid.json`` measures what ``hybrid`` costs per step
beside ``fisher``, whose gradient hooks it shares):

* ``digits_cnn``: the example's CNN and recipe (``examples/digits_cnn.py``: 20 epochs of 23 steps,
  12 prune events), through its ``train`` function;
* ``resnet18_cifar``: ``paddle.vision.models.resnet18`` (11.2M prunable weights) with the usual stem for
  32×32 images (3×3 convolution, stride 1, no max-pool), random 32×32 images, 3 epochs of 5 steps,
  2 prune events;
* ``resnet18_imagenet_stem``: the same network with its ImageNet stem (7×7 stride 2 and max-pool) on
  the same 32×32 images, 4 epochs of 8 steps, 3 prune events. Every stage runs on maps 4× smaller per
  side (the last on 1×1), so it does 16× less compute per weight: the worst case for a cost that grows
  with the number of weights.

Each repeat runs the dense fit and one fit per criterion (same model, data and seed), in an order that
rotates from repeat to repeat; the ratio pruned / dense is taken inside the repeat, and the reported
figure is the median of those ratios, so load from other processes on a shared machine weighs on both
sides alike. The time spent in ``Pruner.prune`` (prune events), ``Pruner.step`` (re-applying the masks
after each update) and the gradient hooks is recorded too, as fractions of the dense fit; what remains
of the ratio is ``unaccounted``: callback dispatch and run-to-run noise.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import common  # first: puts examples/ on sys.path
import numpy as np
import paddle
from digits_cnn import DigitsCNN
from digits_cnn import train as train_digits

from paddle_prune_callback import Pruner, PruningCallback
from paddle_prune_callback.criteria import CRITERIA as CRITERIA_ALL

CRITERIA = ("magnitude", "fisher")
SPARSITY = 0.9


@contextlib.contextmanager
def timed_hooks():
    """Accumulate the wall time spent in the gradient hooks the engine registers."""
    spent = {"hooks": 0.0}
    make_hook = Pruner._make_hook

    def timed_make_hook(self, name):
        hook = make_hook(self, name)

        def timed(grad):
            start = time.perf_counter()
            try:
                return hook(grad)
            finally:
                spent["hooks"] += time.perf_counter() - start
        return timed

    Pruner._make_hook = timed_make_hook
    try:
        yield spent
    finally:
        Pruner._make_hook = make_hook


@contextlib.contextmanager
def timed_methods(cls, names):
    """Accumulate the wall time spent in ``cls.<name>`` for each name, while the context is open."""
    totals = dict.fromkeys(names, 0.0)
    originals = {name: getattr(cls, name) for name in names}

    def wrap(name, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start
        return timed

    for name, fn in originals.items():
        setattr(cls, name, wrap(name, fn))
    try:
        yield totals
    finally:
        for name, fn in originals.items():
            setattr(cls, name, fn)


def digits_case(quick: bool):
    epochs = 2 if quick else 20

    def run(criterion):
        result = train_digits(criterion, SPARSITY, epochs=epochs, seed=0)
        return result["seconds"], result["sparsity"]

    prunable = sum(int(np.prod(p.shape)) for p in DigitsCNN().parameters() if p.ndim >= 2)
    return {"model": f"DigitsCNN (examples/digits_cnn.py), {prunable:,} prunable weights",
            "recipe": f"Adam 1e-3, batch 64, {epochs} epochs of 23 steps, prune at the end of epochs "
                      f"1..{int(0.6 * epochs)} (the example's train())"}, run


def resnet18(cifar_stem: bool) -> paddle.nn.Layer:
    net = paddle.vision.models.resnet18(num_classes=10)
    if cifar_stem:
        net.conv1 = paddle.nn.Conv2D(3, 64, 3, stride=1, padding=1, bias_attr=False)
        net.maxpool = paddle.nn.Identity()
    return net


def resnet_case(quick: bool, cifar_stem: bool):
    if quick:
        epochs, steps, batch = 2, 1, 2
    else:
        epochs, steps, batch = (3, 5, 8) if cifar_stem else (4, 8, 16)
    prune_epochs = list(range(epochs - 1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * batch, 3, 32, 32)).astype("float32")
    y = rng.integers(0, 10, size=(steps * batch, 1)).astype("int64")
    data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])

    def run(criterion):
        paddle.seed(0)
        net = resnet18(cifar_stem)
        model = paddle.Model(net)
        model.prepare(paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters()),
                      paddle.nn.CrossEntropyLoss())
        callbacks = []
        if criterion is not None:
            callbacks.append(PruningCallback(target_sparsity=SPARSITY, prune_epochs=prune_epochs,
                                             criterion=criterion, verbose=0))
        start = time.perf_counter()
        model.fit(data, epochs=epochs, batch_size=batch, shuffle=False, callbacks=callbacks, verbose=0)
        seconds = time.perf_counter() - start
        sparsity = callbacks[0].sparsity()["global"] if callbacks else 0.0
        return seconds, sparsity

    prunable = sum(int(np.prod(p.shape)) for p in resnet18(cifar_stem).parameters() if p.ndim >= 2)
    stem = "3x3 stride-1 stem, no max-pool" if cifar_stem else "ImageNet stem (7x7 stride 2, max-pool)"
    return {"model": f"paddle.vision.models.resnet18(num_classes=10), {stem}, {prunable:,} prunable weights",
            "recipe": f"Adam 1e-3, random 3x32x32 images, batch {batch}, {epochs} epochs of {steps} steps, "
                      f"prune at the end of epochs {prune_epochs}"}, run


CASES = {  # name: (case, default repeats)
    "digits_cnn": (digits_case, 5),
    "resnet18_cifar": (functools.partial(resnet_case, cifar_stem=True), 3),
    "resnet18_imagenet_stem": (functools.partial(resnet_case, cifar_stem=False), 3),
}


def measure(run, repeats: int, criteria=CRITERIA) -> dict:
    """Interleaved runs: dense and each criterion once per repeat, the order rotating between repeats."""
    arms = (None, *criteria)
    run(None)  # warm-up: first-call costs of kernels and allocators are not the callback's
    rows = []
    for r in range(repeats):
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        row = {}
        for arm in order:
            with timed_methods(Pruner, ("prune", "step")) as spent, timed_hooks() as in_hooks:
                seconds, sparsity = run(arm)
            row[arm or "dense"] = {"seconds": seconds, "sparsity": sparsity, "prune_s": spent["prune"],
                                   "step_s": spent["step"], "hooks_s": in_hooks["hooks"]}
        rows.append(row)
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(
            f"{arm} {row[arm]['seconds']:.2f}s" for arm in ("dense", *criteria)), flush=True)
    dense = [row["dense"]["seconds"] for row in rows]
    out = {"dense_seconds": dense, "criteria": {}}
    for c in criteria:
        seconds = [row[c]["seconds"] for row in rows]
        ratios = [s / d for s, d in zip(seconds, dense)]
        share = {part: [row[c][f"{part}_s"] / row["dense"]["seconds"] for row in rows]
                 for part in ("prune", "step", "hooks")}
        out["criteria"][c] = {
            "seconds": seconds,
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "prune_events_share": statistics.median(share["prune"]),
            "mask_reapply_share": statistics.median(share["step"]),
            "gradient_hooks_share": statistics.median(share["hooks"]),
            "unaccounted_share": statistics.median(
                [q - 1 - p - s - h for q, p, s, h in zip(ratios, share["prune"], share["step"], share["hooks"])]),
            "final_sparsity": rows[-1][c]["sparsity"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, help="interleaved repeats per case (default: 5 for the "
                                                     "digits CNN, 3 for the ResNets)")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--criteria", nargs="+", choices=tuple(CRITERIA_ALL), default=list(CRITERIA))
    parser.add_argument("--quick", action="store_true", help="toy size, one repeat: checks that it runs")
    parser.add_argument("--out", default=str(common.DOCS / "overhead.json"))
    args = parser.parse_args()
    results = {"machine": common.machine(), "quick": args.quick, "sparsity": SPARSITY,
               "method": "median over repeats of (fit seconds with the callback) / (dense fit seconds), "
                         "dense and pruned fits interleaved in rotating order", "cases": {}}
    for name in args.cases:
        print(f"{name}:", flush=True)
        make, default_repeats = CASES[name]
        repeats = 1 if args.quick else args.repeats or default_repeats
        info, run = make(args.quick)
        results["cases"][name] = {**info, "repeats": repeats, **measure(run, repeats, tuple(args.criteria))}
        for c, r in results["cases"][name]["criteria"].items():
            print(f"  {c}: median ratio {r['median_ratio']:.3f}", flush=True)
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
