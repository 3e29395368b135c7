"""The README and docs/ pages: every relative link reaches a file and a heading, the argument table lists every
argument of ``PruningCallback``, and the README's headline numbers are the committed results in docs/*.json."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from paddle_prune_callback import PruningCallback

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", without_code(page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_anchor_rule():
    assert anchors(ROOT / "docs" / "nm_sparsity.md") >= {"accuracy-gradual-24-against-asps-one-shot", "in-short"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not missing, f"README's Documentation list does not link {missing}"


def test_readme_argument_table_lists_every_argument():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## `PruningCallback` arguments"):readme.index("## Results as data")]
    rows = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(rows) == sorted(list(inspect.signature(PruningCallback.__init__).parameters)[1:])
    full = (ROOT / "docs" / "callback.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| `(\w+)` \|", full, re.M) == rows


def load(name: str) -> dict:
    return json.loads((ROOT / "docs" / f"{name}.json").read_text())


def test_readme_headline_numbers_are_the_committed_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headlines = readme[readme.index("Headline numbers"):]

    channel = next(c for c in load("channel_latency")["cases"]
                   if (c["model"], c["fraction"], c["batch"]) == ("resnet18", 0.5, 32))
    size = next(r for r in load("sparse_size")["rows"] if r["case"] == "0.9")
    accuracy = load("accuracy")
    nm = load("nm_accuracy")["summary"]
    ours, asp = (max(nm[a]["mean"], nm[b]["mean"]) for a, b in (("magnitude", "fisher"), ("asp_late", "asp_early")))
    expected = [
        f"**{channel['median_ratio']:.2f}×**", f"{100 * channel['flops'][1] / channel['flops'][0]:.0f} % of the FLOPs",
        f"{size['bytes']['paddle'] / 1e6:.1f} MB with `paddle.save`", f"{size['bytes']['sparse'] / 1e6:.1f} MB with",
        f"**{size['ratio']['sparse']:.1f}×**", f"{size['bytes']['sparse_fp16'] / 1e6:.1f} MB with float16",
        f"**{accuracy['default']['mean_delta_points']['hybrid']:+.2f}**",
        f"{accuracy['tasks']['digits']['paired_vs_magnitude']['hybrid']['0.98']['mean_delta_points']:+.2f} on the "
        f"digits CNN at 98 %",
        f"{100 * nm['fisher']['mean']:.2f} % (fisher) against {100 * nm['dense']['mean']:.2f} % dense",
        f"**{100 * (ours - asp):+.2f}**",
    ]
    missing = [e for e in expected if e not in headlines.replace("\n  ", " ")]
    assert not missing, f"README's headline numbers differ from docs/*.json: expected {missing}"
