"""The classification-or-detection experiment (experiments/classification_or_detection/run.py) end to end at a
toy size: both models train, every system gets a row per attack with the required fields, a rerun adds
nothing, and the report answers per eps."""

from __future__ import annotations

import argparse
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
    for r in rows:
        if r["attack"] == "worst_case" and r["system"] in "AC":
            # first successes summed over every batch: each misclassified image is counted once
            assert sum(r["last_success"].values()) == round((1 - r["adversarial_accuracy"]) * r["n"])
        if r["attack"] == "worst_case" and r["system"] in "BD":
            # the menu starts from the suite's images: what the suite broke (misclassified, unflagged) stays
            # broken, and the menu's first successes add up to the undetected error
            assert r["adaptive_after_suite"] and r["last_success"]["suite"] >= 0
            assert sum(r["last_success"].values()) == round(r["undetected_error"] * r["n"])
    # the suite's images are kept for the detector system and for a resumed run
    assert len(list((tmp_path / "runs").glob("*_suite_2_255_q*.pt"))) == 2
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
    _a_network_trained_again_is_measured_again(run, tmp_path, n)


def _a_network_trained_again_is_measured_again(run, tmp_path, n):
    """Weights lost and trained again elsewhere are another network: its systems' rows are measured anew,
    the stale rows stay in the file but leave the report; a weights file that is not the recorded network
    is refused."""
    import pytest
    import torch

    import experiments.label_scarcity.run as ssat

    key = "synthetic_0.1_seed0_standard"
    weights = tmp_path / "networks" / f"{key}.pt"
    train = tmp_path / "train.jsonl"
    old = ssat.recorded_networks(train)[key]
    assert old == ssat.network_id(weights)
    state = torch.load(weights)
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, weights)  # the network trained again: its train row records it
    new = ssat.network_id(weights)
    assert new != old
    row = [json.loads(line) for line in train.read_text().splitlines() if json.loads(line)["key"] == key][-1]
    with train.open("a") as f:
        f.write(json.dumps({**row, "weights_sha256": new}) + "\n")
    torch.save({k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}, weights)
    with pytest.raises(ValueError, match="records network"):  # a file that is neither
        run.main(["--toy", "--out", str(tmp_path)])
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == n
    torch.save(state, weights)
    run.main(["--toy", "--out", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == n + 10  # A and B again, five attacks each; C and D stay
    assert {r["system"] for r in rows[n:]} == {"A", "B"} and {r["weights_sha256"] for r in rows[n:]} == {new}
    a = argparse.Namespace(out=str(tmp_path), rule="fisher", toy=True)
    kept = run.report_rows(a)
    assert len(kept) == n and {r["weights_sha256"] for r in kept if r["system"] in "AB"} == {new}


def test_worst_case_counts_first_successes_over_every_batch():
    """``last_success`` keeps only the latest call's counts; the experiment's rows sum them over batches."""
    import torch

    from monai_adv.transforms import FGSM, PGD, WorstCaseEnsemble

    run = _load()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(10, 1, 4, 4)
    y = net(x).argmax(1)
    y[:2] = (y[:2] + 1) % 3  # two images misclassified before any attack
    ens = WorstCaseEnsemble(net, [FGSM(net, 0.3), PGD(net, 0.3, steps=5)])
    xa, first = run.worst_case_attacked(ens, x, y, size=3)  # four batches
    wrong = int((net(xa).argmax(1) != y).sum())
    assert first["clean"] == 2
    assert sum(first.values()) == wrong
    assert sum(ens.last_success.values()) < wrong  # the latest batch alone undercounts


def test_suite_images_are_kept_for_their_subset_only(tmp_path):
    """The suite's images are reused for the same subset and attacked anew for another one."""
    import torch

    run = _load()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    x = torch.rand(8, 1, 4, 4)
    y = net(x).argmax(1)
    a = argparse.Namespace(toy=True, queries=10)
    path = tmp_path / "suite.pt"
    first = run.suite_images(net, 0.05, x, y, torch.arange(8), path, a, 0)
    stamp = path.stat().st_mtime_ns
    again = run.suite_images(net, 0.05, x, y, torch.arange(8), path, a, 0)
    assert torch.equal(first[0], again[0]) and first[2] == again[2] and path.stat().st_mtime_ns == stamp
    other = run.suite_images(net, 0.05, x[:6], y[:6], torch.arange(6), path, a, 0)
    assert len(other[0]) == 6 and path.stat().st_mtime_ns != stamp
    assert torch.equal(torch.load(path)["index"], torch.arange(6))


def test_the_answer_compares_systems_over_the_seeds_all_four_have(tmp_path, capsys):
    """A seed where one system is missing leaves the answer; a worst-case cell over fewer seeds says so."""
    run = _load()
    # the networks' train rows (written before rows named their network, as the result rows below)
    train = [
        {
            "kind": "train",
            "key": f"synthetic_0.1_seed{seed}_{m}",
            "data": "synthetic",
            "seed": seed,
            "method": m,
        }
        for seed in (0, 1)
        for m in ("standard", "rst")
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    rows = []
    # seed 0: all four systems; seed 1: C only (D still running), with a value that would flip the mean
    for seed, values in ((0, {"A": 0.9, "B": 0.8, "C": 0.3, "D": 0.2}), (1, {"C": 0.0})):
        for system, u in values.items():
            rows.append(
                {
                    "system": system,
                    "data": "synthetic",
                    "seed": seed,
                    "eps": "1/255",
                    "attack": "worst_case",
                    "adaptive": system in "BD",
                    "n": 10,
                    "clean_accuracy": 0.9,
                    "clean_flag_rate": 0.05 if system in "BD" else 0.0,
                    "test_clean_flag_rate": 0.05,
                    "undetected_error": u,
                    "risk": {"0.01": u, "0.1": u, "0.5": u},
                    "detector_rule": "fisher",
                }
            )
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run.main(["--toy", "--out", str(tmp_path), "--report"])
    text = capsys.readouterr().out
    answer = next(line for line in text.splitlines() if line.startswith("- eps 1/255"))
    assert "seeds [0]" in answer and "**D**" in answer and "D minus C: -0.100" in answer
    c_row = next(line for line in text.splitlines() if line.startswith("| C |"))
    assert "0.150 ± 0.212" in c_row and "D" not in c_row
    d_row = next(line for line in text.splitlines() if line.startswith("| D |"))
    assert "0.200 (1 of 2 seeds)" in d_row
    # the figure pairs seeds as the answer does: seed 1's lone C row would have pulled C's point to 0.15
    a = argparse.Namespace(out=str(tmp_path), rule="fisher", toy=True)
    points = run.plot_points(run.report_rows(a))
    seeds, means = points["synthetic"]["1/255"]
    assert seeds == [0] and means["C"] == (0.3, 0.0) and means["D"] == (0.2, 0.0)
    run.plot(a, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
