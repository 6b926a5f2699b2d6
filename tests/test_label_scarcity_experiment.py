"""The label-scarcity experiment's script (experiments/label_scarcity/run.py) end to end at a toy size: every
method trains, the cheap and the AutoAttack evaluations append their rows, a rerun adds nothing, and the
report has a row per method."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    return importlib.import_module("experiments.label_scarcity.run")


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

    # a run stopped after RST's weights were written but before its row: the rerun keeps the weights
    lines = results.read_text().splitlines()
    rst_line = next(i for i, line in enumerate(lines) if '"key": "synthetic_0.25_seed0_rst"' in line)
    results.write_text("\n".join(lines[:rst_line] + lines[rst_line + 1 :]) + "\n")
    weights = tmp_path / "runs" / "synthetic_0.25_seed0_rst.pt"
    stamp = weights.stat().st_mtime_ns
    experiment.main(args + ["--methods", "rst"])
    found = [json.loads(line) for line in results.read_text().splitlines()][-1]
    assert found["key"] == "synthetic_0.25_seed0_rst" and found["weights_from_stopped_run"]
    assert found["train_cpu_s"] is None and found["clean"] == trained["rst"]["clean"]
    assert weights.stat().st_mtime_ns == stamp  # not trained again
    assert len(results.read_text().splitlines()) == n
    # --suite-eps runs the suite at another eps only (the methods asked for), keeping the rows there are
    experiment.main(args + ["--stage", "suite", "--methods", "madry", "--suite-eps", "4/255"])
    new = [json.loads(line) for line in results.read_text().splitlines()[n:]]
    # the 25% and all-labels Madry, and the all-labels standard (always in the plan, as the upper bound's twin)
    assert sorted((r["kind"], r["method"], r["label_fraction"], r["eps"]) for r in new) == [
        ("suite", "madry", 0.25, "4/255"),
        ("suite", "madry", 1.0, "4/255"),
        ("suite", "standard", 1.0, "4/255"),
    ]

    capsys.readouterr()
    experiment.main(["--report", "--results", str(results), "--plot", str(tmp_path / "plot.png")])
    out = capsys.readouterr().out
    for m in experiment.METHODS:
        assert f"| {m} |" in out
    assert "| synthetic 25% | rst | trades | 1 |" in out
    # the last cells before the CPU time: the smallest per-class recall under the suite at 1/255
    trades_suite = next(
        s for s in suites if s["method"] == "trades" and s["label_fraction"] == 0.25 and s["eps"] == "1/255"
    )
    line = next(line for line in out.splitlines() if line.startswith("| trades | scratch |"))
    assert "min recall under AA@1/255" in out
    expected = 100 * min(x for x in trades_suite["recall_robust"] if x is not None)
    assert line.split("|")[-3].strip() == f"{expected:.1f} ± 0.0"
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_suite_subset_is_stratified_and_fixed(experiment):
    import torch

    y = torch.tensor([0, 1, 2, 3] * 30)
    sub = experiment.suite_subset(y, 10)
    assert len(sub) == 40 and torch.bincount(y[sub]).tolist() == [10, 10, 10, 10]
    assert torch.equal(sub, experiment.suite_subset(y, 10))  # fixed: the same subset for every method


def test_parse_eps(experiment):
    import argparse

    assert experiment.parse_eps("2/255") == pytest.approx(2 / 255)
    assert experiment.parse_eps("0.008") == pytest.approx(0.008)
    assert experiment.eps_name(experiment.parse_eps("4/255")) == "4/255"
    for bad in ("two", "1/0", "0", "-1/255"):
        with pytest.raises(argparse.ArgumentTypeError, match="eps"):
            experiment.parse_eps(bad)


def _row(method: str, seed: int, clean: float, pgd1: float, pgd2: float, cpu: float) -> dict:
    return dict(
        key=f"synthetic_0.1_seed{seed}_{method}", data="synthetic", label_fraction=0.1, seed=seed,
        method=method, clean=clean, train_cpu_s=cpu, **{"pgd20@1/255": pgd1, "pgd20@2/255": pgd2},
    )  # fmt: skip


def test_paired_answer_differences_are_paired_by_seed(experiment):
    rows = [
        _row("standard", 0, 0.8, 0.0, 0.0, 10.0),
        _row("standard", 1, 0.8, 0.0, 0.0, 10.0),
        _row("trades", 0, 0.80, 0.60, 0.40, 40.0),
        _row("trades", 1, 0.70, 0.50, 0.30, 40.0),
        _row("rst", 0, 0.82, 0.65, 0.50, 70.0),  # +5 and +3 points over TRADES of its own seed
        _row("rst", 1, 0.72, 0.53, 0.40, 70.0),
        _row("rst", 2, 0.10, 0.10, 0.10, 70.0),  # no TRADES of seed 2: not paired, left out
    ]
    train_rows = {r["key"]: r for r in rows}
    suite = {
        "synthetic_0.1_seed0_trades": {"1/255": {"robust": 0.55}},
        "synthetic_0.1_seed0_rst": {"1/255": {"robust": 0.60}},
        "synthetic_0.1_seed1_rst": {"1/255": {"robust": 0.50}, "2/255": {"robust": 0.4}},  # TRADES has none
    }
    lines = experiment.paired_answer(train_rows, suite)
    (rst,) = [line for line in lines if line.startswith("| synthetic 10% | rst | trades |")]
    cells = [c.strip() for c in rst.strip("|").split("|")]
    # n, AA (one pair), PGD-20@1/255 (+5, +3), PGD-20@2/255 (+10, +10), clean (+2, +2), CPU (70+10)/40
    assert cells[3:] == ["2", "**5.0 ± 0.0** (1)", "", "4.0 ± 1.4", "10.0 ± 0.0", "2.0 ± 0.0", "2.0x"]
    assert not any("| madry |" in line for line in lines)  # no Madry rows: nothing to pair
