"""The label-scarcity experiment's script (benchmarks/ssat_experiment.py) end to end at a toy size: every
method trains, the cheap and the AutoAttack evaluations append their rows, a rerun adds nothing, and the
report has a row per method."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        "ssat_experiment", ROOT / "benchmarks" / "ssat_experiment.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def experiment():
    return _load()


def test_toy_experiment_runs_resumes_and_reports(experiment, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    args = [
        "--data", "synthetic", "--seeds", "0", "--synthetic-fractions", "0.25", "--size", "32",
        "--n-pool", "6", "--n-test", "3", "--synthetic-iterations", "2", "--synthetic-batch", "4",
        "--suite-per-class", "2", "--suite-steps", "2", "--suite-queries", "4", "--threads", "1",
        "--cache", str(tmp_path / "cache"), "--runs", str(tmp_path / "runs"), "--results", str(results),
    ]  # fmt: skip
    experiment.main(args + ["--methods", "standard", "madry", "ssat", "ssat_robust", "rst", "trades"])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    trained = {r["method"]: r for r in rows if r["kind"] == "train" and r["label_fraction"] == 0.25}
    assert set(trained) == set(experiment.METHODS)
    # the all-labels upper bound rows (standard and Madry with every label of the pool)
    assert {r["method"] for r in rows if r["kind"] == "train" and r["label_fraction"] == 1.0} == {
        "standard",
        "madry",
    }
    r = trained["ssat_robust"]
    assert r["n_labeled"] == 8 and r["n_unlabeled"] == 16 and r["n_test"] == 12
    assert r["start"] == "standard model of this seed"
    assert 0.0 <= r["clean"] <= 1.0 and len(r["recall_clean"]) == 4
    assert all(f"fgsm@{e:g}" in r for e in experiment.FGSM_GRID)
    suites = [r for r in rows if r["kind"] == "suite"]
    assert {(s["method"], s["eps"]) for s in suites if s["label_fraction"] == 0.25} == {
        (m, e) for m in experiment.METHODS for e in ("1/255", "2/255")
    }
    for s in suites:
        assert s["n"] == 8 and 0.0 <= s["robust"] <= 1.0 and len(s["recall_robust"]) == 4

    n = len(rows)
    experiment.main(args)  # everything is done: nothing is trained or evaluated again
    assert len(results.read_text().splitlines()) == n

    capsys.readouterr()
    experiment.main(["--report", "--results", str(results), "--plot", str(tmp_path / "plot.png")])
    out = capsys.readouterr().out
    for m in experiment.METHODS:
        assert f"| {m} |" in out
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_suite_subset_is_stratified_and_fixed(experiment):
    import torch

    y = torch.tensor([0, 1, 2, 3] * 30)
    sub = experiment.suite_subset(y, 10)
    assert len(sub) == 40 and torch.bincount(y[sub]).tolist() == [10, 10, 10, 10]
    assert torch.equal(sub, experiment.suite_subset(y, 10))  # fixed: the same subset for every method
