"""Each finished experiment re-makes the tables of its README from its committed rows, with the command the
README gives: a table edited by hand, or rows changed without the page, fails here."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def _table_rows(text: str) -> list[str]:
    """The body rows of every markdown table in ``text`` (header and rule rows dropped)."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        if i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: ") and lines[i + 1].startswith("|"):
            continue  # a header row
        rows.append(line)
    return rows


def test_label_scarcity_report_remakes_its_readme(tmp_path):
    readme = EXPERIMENTS / "label_scarcity" / "README.md"
    copy = tmp_path / "README.md"
    shutil.copy(readme, copy)
    run = importlib.import_module("experiments.label_scarcity.run")
    run.main(["--report", "--markdown", str(copy), "--plot", str(tmp_path / "plot.png")])
    assert copy.read_text() == readme.read_text()


def test_detection_small_scale_summary_is_in_its_readme(tmp_path):
    run = importlib.import_module("experiments.detection_small_scale.run")
    out = tmp_path / "tables.md"
    run.main(["--summary", str(out)])
    readme = (EXPERIMENTS / "detection_small_scale" / "README.md").read_text()
    rows = _table_rows(out.read_text())
    assert len(rows) > 20
    assert [r for r in rows if r not in readme] == []


def test_ssat_collapse_tables_match_its_readme():
    run = importlib.import_module("experiments.ssat_collapse.run")
    with open(EXPERIMENTS / "ssat_collapse" / "results" / "results.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    printed = run.tables(rows)
    readme = (EXPERIMENTS / "ssat_collapse" / "README.md").read_text()
    # the README's first table keeps four of the old demo's epochs: each must be a printed row
    first = readme.split("## The old demo's scale")[1].split("\n\n")[1]
    kept = _table_rows(first)
    assert len(kept) == 4
    assert [r for r in kept if r not in printed] == []
    # the end points quoted in the recipe table
    assert "| threshold | 1000 | 20 | 0.657 | 0.77 / 0.80 / 0.46 / 0.60 |" in printed
    assert "0.657" in readme and "0.77 / 0.80 / 0.46 / 0.60" in readme
