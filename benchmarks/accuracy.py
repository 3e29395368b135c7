"""Accuracy vs sparsity on the digits CNN: every criterion, several seeds, the dense recipe unchanged.

    GLOG_minloglevel=2 python benchmarks/accuracy.py [--seeds 0 1 2] [--epochs 20] [--quick]
                                                       [--out docs/accuracy.json]

Each run is ``train(criterion, sparsity, epochs, seed)`` of ``examples/digits_cnn.py``: the same data
split, optimizer, batch size and number of epochs for dense and pruned runs; pruned runs prune at the
end of epochs 1..0.6·epochs (cubic schedule) and train on at the final sparsity. Writes the runs and
their summary to the JSON file and the plot next to it (same name, ``.png``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common  # first: puts examples/ on sys.path
import matplotlib
from digits_cnn import CRITERIA, digits_datasets
from digits_cnn import train as train_digits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)


def stats(values: list) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "values": values}


def summarize(runs: list, sparsities, criteria) -> dict:
    dense = stats([r["accuracy"] for r in runs if r["criterion"] == "dense"])
    table = {c: {str(s): stats([r["accuracy"] for r in runs if r["criterion"] == c and r["target_sparsity"] == s])
                 for s in sparsities} for c in criteria}
    verdicts = {}
    for s in sparsities:
        means = sorted(((table[c][str(s)]["mean"], c) for c in criteria), reverse=True)
        (best, winner), (second, runner_up) = means[0], means[1]
        verdicts[str(s)] = {"best": winner, "best_minus_dense_points": 100 * (best - dense["mean"]),
                            "runner_up": runner_up, "margin_points": 100 * (best - second),
                            "worst": means[-1][1], "worst_minus_dense_points": 100 * (means[-1][0] - dense["mean"])}
    return {"dense": dense, "pruned": table, "verdicts": verdicts}


def plot(summary: dict, sparsities, criteria, epochs: int, seeds: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    x = list(range(len(sparsities)))
    dense = summary["dense"]
    ax.axhspan(100 * dense["min"], 100 * dense["max"], color="0.85", label="dense (min–max over seeds)")
    ax.axhline(100 * dense["mean"], color="0.45", linewidth=1, linestyle="--", label="dense (mean)")
    for i, (c, marker) in enumerate(zip(criteria, "osD")):
        cells = [summary["pruned"][c][str(s)] for s in sparsities]
        shift = 0.08 * (i - (len(criteria) - 1) / 2)      # side by side, so the bars do not hide each other
        mean = [100 * cell["mean"] for cell in cells]
        low = [m - 100 * cell["min"] for m, cell in zip(mean, cells)]
        high = [100 * cell["max"] - m for m, cell in zip(mean, cells)]
        ax.errorbar([v + shift for v in x], mean, yerr=[low, high], marker=marker, capsize=3, label=c)
    ax.set_xticks(x, [f"{100 * s:g}%" for s in sparsities])
    ax.set_xlabel("sparsity (fraction of prunable weights set to zero)")
    ax.set_ylabel("eval accuracy (%)")
    ax.set_title(f"DigitsCNN on scikit-learn digits: mean and min–max over {seeds} seed{'s' if seeds != 1 else ''}, {epochs} epochs")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="toy size (90 and 98%%, 1 seed, 2 epochs)")
    parser.add_argument("--out", default=str(common.DOCS / "accuracy.json"),
                        help="JSON results; the plot is written next to it as .png")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON file")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        data = json.loads(out.read_text())
        plot(data, data["sparsities"], data["criteria"], data["epochs"], len(data["seeds"]), out.with_suffix(".png"))
        return
    sparsities = (0.9, 0.98) if args.quick else SPARSITIES
    seeds = [0] if args.quick else args.seeds
    epochs = 2 if args.quick else args.epochs
    runs = []
    for seed in seeds:
        for criterion, sparsity in [(None, 0.0)] + [(c, s) for s in sparsities for c in CRITERIA]:
            r = train_digits(criterion, sparsity, epochs=epochs, seed=seed)
            runs.append({"criterion": r["criterion"], "target_sparsity": sparsity, "seed": seed,
                         "accuracy": r["accuracy"], "sparsity": r["sparsity"], "seconds": r["seconds"]})
            print(f"seed {seed} {r['criterion']:<9} sparsity {r['sparsity']:.4f}: accuracy {r['accuracy']:.4f}",
                  flush=True)
    summary = summarize(runs, sparsities, CRITERIA)
    common.write_json(out, {"machine": common.machine(), "quick": args.quick, "epochs": epochs, "seeds": seeds,
                            "sparsities": list(sparsities), "criteria": list(CRITERIA),
                            "test_images": len(digits_datasets()[1]),
                            "recipe": "examples/digits_cnn.py train(): Adam 1e-3, batch 64, 80/20 stratified "
                                      f"split, prune at the end of epochs 1..{int(0.6 * epochs)} (cubic "
                                      "schedule, global scope)",
                            "runs": runs, **summary})
    plot(summary, sparsities, CRITERIA, epochs, len(seeds), out.with_suffix(".png"))


if __name__ == "__main__":
    main()
