"""The classification-or-detection experiment (experiments/classification_or_detection/run.py) end to end at a
toy size: both models train, every system gets a row per attack with the required fields, a rerun adds
nothing, and the report answers per eps."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = (
    "system",
    "data",
    "seed",
    "eps",
    "attack",
    "adaptive",
    "n",
    "clean_accuracy",
    "clean_flag_rate",
    "undetected_error",
    "auroc_all",
    "auroc_success",
    "tpr_at_fpr",
    "risk",
)


def _load():
    return importlib.import_module("experiments.classification_or_detection.run")


def test_toy_experiment_runs_resumes_and_reports(tmp_path, capsys):
    run = _load()
    run.main(["--toy", "--out", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {(r["system"], r["attack"]) for r in rows} == {
        (s, a) for s in "ABCD" for a in ("pgd10", "apgd_ce", "apgd_dlr", "cw", "worst_case")
    }
    for r in rows:
        assert all(k in r for k in REQUIRED), sorted(set(REQUIRED) - set(r))
        assert set(r["risk"]) == {"0.01", "0.1", "0.5"}
        assert 0.0 <= r["undetected_error"] <= 1.0
        # only the systems with a detector flag anything or get detection numbers
        if r["system"] in "AC":
            assert r["clean_flag_rate"] == 0.0 and r["auroc_all"] is None
        else:
            assert r["auroc_all"] is not None
    adaptive = {r["system"] for r in rows if r["adaptive"]}
    assert adaptive == {"B", "D"}
    # A and B share the attacked images: a detector can only lower the undetected error
    by = {(r["system"], r["attack"]): r for r in rows}
    for atk in ("pgd10", "apgd_ce", "apgd_dlr", "cw"):
        assert by[("B", atk)]["undetected_error"] <= by[("A", atk)]["undetected_error"]
        assert by[("D", atk)]["undetected_error"] <= by[("C", atk)]["undetected_error"]
    n = len(rows)
    run.main(["--toy", "--out", str(tmp_path)])
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == n  # resumed: nothing to do
    capsys.readouterr()
    run.main(["--toy", "--out", str(tmp_path), "--report"])
    text = capsys.readouterr().out
    assert "| A |" in text and "eps 2/255" in text and "D minus C" in text
