"""Accuracy vs sparsity on two tasks, every criterion, paired with magnitude seed by seed; the default criterion.

    GLOG_minloglevel=2 nice python benchmarks/accuracy.py [--seeds 0 1 2 3 4] [--epochs 20] [--quick]
                                                            [--out docs/accuracy.json] [--resume]

Tasks: ``digits``, the digits CNN of ``examples/digits_cnn.py`` (360 test images), and ``signals``,
generated 1D signals with a conv stem and a 2,048-fan-in Linear (``benchmarks/signals.py``, 1,000 test
signals). Each run is one ``train(criterion, sparsity, epochs, seed)`` with the same recipe for dense and
pruned runs: Adam 1e-3, batch 64, the same epochs; pruned runs prune at the end of epochs 1..0.6·epochs
(cubic schedule, global scope) and train on at the final sparsity. The seed changes the initialisation
and the batch order, never the data, so the runs of one seed are paired: every criterion's accuracy is
compared with magnitude's of the same task, sparsity and seed. A win, tie or loss is counted in test
images (a tie is the same number of correct images).

How the default criterion is chosen (fixed before any of these runs was made, as issue 14 states it):
for every criterion, its mean paired difference Δ from magnitude (accuracy − magnitude's accuracy, same
seed) is taken at each of the 6 cells, both tasks × 90 / 95 / 98 %, and averaged over the 6 cells
(magnitude's own Δ is 0). The criterion with the highest average is the default, unless it is more than
0.5 points below magnitude (a cell mean Δ < −0.5) at any one of the 6 cells; then the default is
magnitude.

Writes the runs (with each run's per-layer sparsity, measured from the weights), their summary and the
default to the JSON file after every run (``--resume`` skips the runs already in it), and the plot next
to it (same name, ``.png``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import common  # first: puts examples/ on sys.path
import matplotlib
import signals
from digits_cnn import train as train_digits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

SPARSITIES = (0.9, 0.95, 0.98)
CRITERIA = ("magnitude", "gradient", "fisher", "hybrid")
LAYER_SPARSITIES = ("0.95", "0.98")
DISQUALIFY_POINTS = 0.5


def tasks(quick: bool) -> dict:
    """Each task's train function and its number of test examples."""
    sizes = {"train_size": 400, "test_size": 200} if quick else {}
    return {"digits": (train_digits, 360),
            "signals": (lambda *a, **k: signals.train(*a, **sizes, **k), sizes.get("test_size", 1000))}


def stats(values: list) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "values": values}


def summarize_task(runs: list, sparsities, criteria, test_images: int) -> dict:
    """Dense, pruned, paired-vs-magnitude and per-layer summaries of one task's runs."""
    by_key = {(r["criterion"], r["target_sparsity"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["criterion"] == "dense"})
    dense = stats([by_key["dense", 0.0, s]["accuracy"] for s in seeds])
    pruned, paired, layers = {}, {}, {}
    for c in criteria:
        pruned[c], paired[c], layers[c] = {}, {}, {}
        for sp in sparsities:
            cell = [by_key[c, sp, s] for s in seeds]
            pruned[c][str(sp)] = stats([r["accuracy"] for r in cell])
            # In test images, so that a tie is exact: the same number of correct images.
            diffs = [round(test_images * (r["accuracy"] - by_key["magnitude", sp, r["seed"]]["accuracy"]))
                     for r in cell]
            points = [100 * d / test_images for d in diffs]
            paired[c][str(sp)] = {"delta_points": points, "mean_delta_points": statistics.fmean(points),
                                  "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
                                  "losses": sum(d < 0 for d in diffs),
                                  "minus_dense_points": 100 * (pruned[c][str(sp)]["mean"] - dense["mean"])}
            if str(sp) in LAYER_SPARSITIES:
                names = [n for n in cell[0]["layer_sparsity"] if n != "global"]
                layers[c][str(sp)] = {n: statistics.fmean(r["layer_sparsity"][n] for r in cell) for n in names}
    return {"test_images": test_images, "seeds": seeds, "dense": dense, "pruned": pruned,
            "paired_vs_magnitude": paired, "layer_sparsity": layers}


def choose_default(summaries: dict, sparsities, criteria) -> dict:
    """The rule of the module docstring, applied to the per-task summaries."""
    cells = [(task, str(sp)) for task in summaries for sp in sparsities]
    mean_delta, worst = {}, {}
    for c in criteria:
        deltas = [summaries[t]["paired_vs_magnitude"][c][sp]["mean_delta_points"] for t, sp in cells]
        mean_delta[c] = statistics.fmean(deltas)
        worst[c] = min(deltas)
    best = max(criteria, key=lambda c: mean_delta[c])
    disqualified = worst[best] < -DISQUALIFY_POINTS
    return {"rule": f"highest mean paired delta vs magnitude over {len(cells)} cells (tasks x sparsities); "
                    f"magnitude if that criterion is more than {DISQUALIFY_POINTS} points below magnitude in any cell",
            "mean_delta_points": mean_delta, "worst_cell_delta_points": worst, "best": best,
            "best_disqualified": disqualified, "default": "magnitude" if disqualified else best}


def plot(data: dict, path: Path) -> None:
    sparsities, criteria = data["sparsities"], data["criteria"]
    fig, axes = plt.subplots(1, len(data["tasks"]), figsize=(11, 4.2), dpi=120, squeeze=False)
    x = list(range(len(sparsities)))
    for ax, (task, summary) in zip(axes[0], data["tasks"].items()):
        dense = summary["dense"]
        ax.axhspan(100 * dense["min"], 100 * dense["max"], color="0.85", label="dense (min–max over seeds)")
        ax.axhline(100 * dense["mean"], color="0.45", linewidth=1, linestyle="--", label="dense (mean)")
        for i, (c, marker) in enumerate(zip(criteria, "osD^")):
            cells = [summary["pruned"][c][str(s)] for s in sparsities]
            shift = 0.08 * (i - (len(criteria) - 1) / 2)      # side by side, so the bars do not hide each other
            mean = [100 * cell["mean"] for cell in cells]
            low = [m - 100 * cell["min"] for m, cell in zip(mean, cells)]
            high = [100 * cell["max"] - m for m, cell in zip(mean, cells)]
            ax.errorbar([v + shift for v in x], mean, yerr=[low, high], marker=marker, capsize=3, label=c)
        ax.set_xticks(x, [f"{100 * s:g}%" for s in sparsities])
        ax.set_xlabel("sparsity (fraction of prunable weights set to zero)")
        ax.set_ylabel("eval accuracy (%)")
        ax.set_title(f"{task}: mean and min–max over {len(summary['seeds'])} seeds, {data['epochs']} epochs",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def result(runs: list, args, sparsities, seeds, epochs, test_images: dict, complete: bool) -> dict:
    data = {"machine": common.machine(), "quick": args.quick, "complete": complete, "epochs": epochs,
            "seeds": seeds, "sparsities": list(sparsities), "criteria": list(CRITERIA),
            "recipe": "train() of examples/digits_cnn.py and benchmarks/signals.py: Adam 1e-3, batch 64, prune at "
                      f"the end of epochs 1..{int(0.6 * epochs)} (cubic schedule, global scope)",
            "runs": runs}
    if complete:
        data["tasks"] = {t: summarize_task([r for r in runs if r["task"] == t], sparsities, CRITERIA, n)
                         for t, n in test_images.items()}
        data["default"] = choose_default(data["tasks"], sparsities, CRITERIA)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="toy size (90 and 98%%, 1 seed, 2 epochs, 400 training signals)")
    parser.add_argument("--out", default=str(common.DOCS / "accuracy.json"),
                        help="JSON results; the plot is written next to it as .png")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the JSON file")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON file")
    args = parser.parse_args()
    out = Path(args.out)
    if args.replot:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    sparsities = (0.9, 0.98) if args.quick else SPARSITIES
    seeds = [0] if args.quick else args.seeds
    epochs = 2 if args.quick else args.epochs
    task_fns = tasks(args.quick)
    test_images = {t: n for t, (_, n) in task_fns.items()}
    runs = json.loads(out.read_text())["runs"] if args.resume and out.exists() else []
    done = {(r["task"], r["criterion"], r["target_sparsity"], r["seed"]) for r in runs}
    for seed in seeds:
        for task, (train, _) in task_fns.items():
            for criterion, sparsity in [(None, 0.0)] + [(c, s) for s in sparsities for c in CRITERIA]:
                if (task, criterion or "dense", sparsity, seed) in done:
                    continue
                r = train(criterion, sparsity, epochs=epochs, seed=seed)
                layers = r["callback"].sparsity() if r["callback"] is not None else {}
                runs.append({"task": task, "criterion": r["criterion"], "target_sparsity": sparsity, "seed": seed,
                             "accuracy": r["accuracy"], "sparsity": r["sparsity"], "seconds": r["seconds"],
                             "layer_sparsity": layers})
                print(f"seed {seed} {task:<8} {r['criterion']:<9} sparsity {r['sparsity']:.4f}: "
                      f"accuracy {r['accuracy']:.4f}", flush=True)
                common.write_json(out, result(runs, args, sparsities, seeds, epochs, test_images, complete=False))
    data = result(runs, args, sparsities, seeds, epochs, test_images, complete=True)
    common.write_json(out, data)
    print(f"default criterion: {data['default']['default']} "
          f"(mean paired delta vs magnitude, points: {data['default']['mean_delta_points']})", flush=True)
    plot(data, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
