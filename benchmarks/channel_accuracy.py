"""Accuracy vs channel sparsity on the digits CNN, and how channel scores should compete across layers.

    GLOG_minloglevel=2 python benchmarks/channel_accuracy.py [--seeds 0 1 2] [--epochs 20] [--quick]
                                                               [--out docs/channel_accuracy.json]
    # or one process per seed, then: python benchmarks/channel_accuracy.py --combine s0.json s1.json s2.json

The recipe is ``examples/digits_cnn.py``'s (Adam 1e-3, batch 64, 20 epochs, pruning at the end of epochs
1..12 with the cubic schedule, ``scope="global"``), with ``pattern="channel"``: the target is the fraction of
the prunable channels (conv1, conv2, fc1: 176) removed. Two parts:

- ``curve``: magnitude, fisher and gradient at several channel fractions, over the seeds, plotted beside
  the unstructured curve of ``docs/accuracy.json`` (x: the fraction of channels, or of weights, removed);
- ``rules``: at 75 % of channels (magnitude and fisher), the channel score as the sum over all the
  channel's slices (``group``) or over its producing filter only (``producer``), raw or divided by the
  number of weights summed.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common  # first: puts examples/ on sys.path
import matplotlib
import numpy as np
import paddle
from digits_cnn import digits_model

from paddle_prune_callback import PruningCallback
from paddle_prune_callback.channel_pattern import Channel
from paddle_prune_callback.slim import zero_channels

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

FRACTIONS = (0.25, 0.5, 0.75)
CRITERIA = ("magnitude", "fisher", "gradient")
RULES = (("group", False), ("group", True), ("producer", False), ("producer", True))


def train(criterion: str, fraction: float, seed: int, epochs: int, score: str = "group",
          normalize: bool = False) -> dict:
    net, model, train_data, eval_data = digits_model(seed)
    cb = PruningCallback(target_sparsity=fraction, prune_epochs=list(range(1, int(0.6 * epochs) + 1)),
                         criterion=criterion, pattern=Channel(score=score, normalize=normalize), verbose=0)
    model.fit(train_data, epochs=epochs, batch_size=64, shuffle=True, callbacks=[cb], verbose=0)
    accuracy = float(model.evaluate(eval_data, batch_size=256, verbose=0)["acc"])
    tensors = net.state_dict()
    kept = {g.name: int(g.size - zero_channels(g, tensors).sum()) for g in cb.pruner.pattern.groups}
    return {"criterion": criterion, "fraction": fraction, "seed": seed, "score": score, "normalize": normalize,
            "accuracy": accuracy, "kept_channels": kept}


def stats(values: list) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "values": values}


def plot(data: dict, unstructured: dict | None, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for c, marker in zip(data["criteria"], "osD"):
        xs = data["fractions"]
        ax.plot([100 * f for f in xs], [100 * data["curve"][c][str(f)]["mean"] for f in xs], marker=marker,
                label=f"channel, {c}")
    if unstructured is not None:
        digits = unstructured["tasks"]["digits"]       # benchmarks/accuracy.py's digits CNN task
        for c, marker in zip(unstructured["criteria"], "osD^"):
            xs = unstructured["sparsities"]
            ax.plot([100 * s for s in xs], [100 * digits["pruned"][c][str(s)]["mean"] for s in xs],
                    marker=marker, linestyle=":", alpha=0.6, label=f"unstructured, {c}")
        ax.axhline(100 * digits["dense"]["mean"], color="0.45", linewidth=1, linestyle="--", label="dense")
    ax.set_xlabel("% of channels removed (channel) / % of weights removed (unstructured)")
    ax.set_ylabel("eval accuracy (%)")
    ax.set_title(f"digits CNN, mean of {len(data['seeds'])} seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def summarize(runs: list, fractions, seeds, epochs: int, quick: bool) -> dict:
    criteria = [c for c in CRITERIA if any(r["part"] == "curve" and r["criterion"] == c for r in runs)]
    curve = {c: {str(f): stats([r["accuracy"] for r in runs if r["part"] == "curve" and r["criterion"] == c
                                and r["fraction"] == f]) for f in fractions} for c in criteria}
    rules = {}
    for c in ("magnitude", "fisher"):
        for score, normalize in RULES:
            values = [r["accuracy"] for r in runs if r["fraction"] == 0.75 and r["criterion"] == c
                      and (r["score"], r["normalize"]) == (score, normalize)]
            if values:
                rules[f"{c}/{score}/{'mean' if normalize else 'sum'}"] = stats(values)
    return {"machine": common.machine(), "quick": quick, "epochs": epochs, "seeds": sorted(seeds),
            "fractions": list(fractions), "criteria": criteria, "runs": runs, "curve": curve,
            "rules_at_0.75": rules}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="toy size: one seed, 2 epochs, two runs (magnitude at 50 %%, one rule), for the tests")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="instead of training, merge the runs of these result files (one per seed)")
    parser.add_argument("--out", default=str(common.DOCS / "channel_accuracy.json"))
    args = parser.parse_args(argv)
    if args.combine:
        parts = [json.loads(Path(p).read_text()) for p in args.combine]
        runs = [r for part in parts for r in part["runs"]]
        data = summarize(runs, parts[0]["fractions"], {r["seed"] for r in runs}, parts[0]["epochs"], False)
    else:
        seeds, epochs = ([0], 2) if args.quick else (args.seeds, args.epochs)
        fractions = (0.5,) if args.quick else FRACTIONS
        variants = RULES[1:2] if args.quick else RULES[1:]    # RULES[0], the default, is in the curve at 0.75
        runs = []
        for seed in seeds:
            for criterion in CRITERIA[:1] if args.quick else CRITERIA:
                for fraction in fractions:
                    runs.append(dict(train(criterion, fraction, seed, epochs), part="curve"))
                    print(json.dumps(runs[-1]), flush=True)
            for criterion in ("fisher",) if args.quick else ("magnitude", "fisher"):
                for score, normalize in variants:
                    runs.append(dict(train(criterion, 0.75, seed, epochs, score, normalize), part="rules"))
                    print(json.dumps(runs[-1]), flush=True)
        data = summarize(runs, fractions, seeds, epochs, args.quick)
    common.write_json(Path(args.out), data)
    accuracy_json = common.DOCS / "accuracy.json"
    unstructured = json.loads(accuracy_json.read_text()) if accuracy_json.exists() else None
    plot(data, unstructured, Path(args.out).with_suffix(".png"))
    return data


if __name__ == "__main__":
    main()
