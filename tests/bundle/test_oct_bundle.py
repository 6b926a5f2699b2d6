"""The OCT bundle, run as its README says: the CLI commands with configs/quick.json, from a copy of the
bundle folder, and its configs through ``ConfigWorkflow``.

Each CLI call starts a fresh Python (monai + monai_adv imports: a few CPU seconds), so the CLI is used
for the README commands and everything else runs in-process. Threads are limited to one per process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import write_oct_dicom

from tests.bundle.bundle_runs import QUICK, causes, run_cli, workflow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_robust_classification"
SAMPLE = REPO.parent / "shared" / "data" / "kermany-oct-sample"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def configs(*names: str) -> str:
    return "[" + ",".join(f"'configs/{n}.json'" for n in names) + f",'{QUICK}']"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A copy of the bundle folder without generated files (data, models, runs, eval)."""
    dst = tmp_path_factory.mktemp("bundle") / "oct_robust_classification"
    shutil.copytree(
        BUNDLE, dst, ignore=shutil.ignore_patterns("data", "runs", "eval", "__pycache__", "*.pt", "*.ts")
    )
    return dst


@pytest.fixture(scope="module")
def trained(bundle: Path) -> Path:
    run_cli(["run", "--config_file", configs("train")], bundle)
    return bundle


@pytest.fixture(scope="module")
def fitted(trained: Path) -> Path:
    run_cli(["run", "--config_file", configs("train", "fit_detector")], trained)
    return trained


# ---------------------------------------------------------------------------------------------- layout
def test_layout_and_metadata():
    for rel in (
        "LICENSE",
        "docs/README.md",
        "docs/data_license.txt",
        "configs/metadata.json",
        "configs/logging.conf",
        *[
            f"configs/{n}.json"
            for n in (
                "train",
                "train_supervised",
                "train_madry",
                "train_trades",
                "fit_detector",
                "evaluate",
                "inference",
                "multi_gpu_train",
                "quick",
            )
        ],
    ):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in (
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "intended_use",
        "references",
        "network_data_format",
    ):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    assert "not for clinical use" in meta["intended_use"].lower()
    assert "CC BY 4.0" in meta["data_source"] and "CC BY 4.0" in meta["data_license"]
    # the model card: numbers measured on the patient-held-out real test set, not descriptions of files
    metrics = meta["eval_metrics"]
    for key in ("clean_accuracy", "autoattack_apgd_ce_apgd_t_accuracy_eps_1_255", "detector_clean_flag_rate",
                *[f"clean_recall_{c}" for c in ("CNV", "DME", "DRUSEN", "NORMAL")]):  # fmt: skip
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    assert meta["eval_metrics_over_seeds"]["clean_accuracy"]["seeds"] == [0, 1]
    assert any("2006.13555" in r for r in meta["references"])
    assert any("Kermany" in r for r in meta["references"])
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["modality"] == "OCT" and image["num_channels"] == 1 and image["value_range"] == [0, 1]
    size = json.loads((BUNDLE / "configs" / "inference.json").read_text())["image_size"]
    assert image["spatial_shape"] == [size, size]  # what the shipped weights and inference.json take
    assert meta["network_data_format"]["outputs"]["pred"]["type"] == "logits"
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "CNV",
        "1": "DME",
        "2": "DRUSEN",
        "3": "NORMAL",
    }
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert "label_fraction" in train


# ------------------------------------------------------------------------------------------------ CLI
def test_train_cli(trained: Path):
    assert (trained / "quick" / "models" / "model.pt").is_file()
    saved = torch.load(trained / "quick" / "models" / "model.pt", weights_only=True)
    assert any(k.endswith("fc.weight") for k in saved["model"])
    # the checkpoint records how to use it: the quick run's image size, channels and classes
    meta = saved["metadata"]
    assert (
        meta["image_size"] == 32
        and meta["num_channels"] == 1
        and meta["class_names"] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    )
    assert meta["method"] == "ssat" and meta["output"] == "logits"
    assert list((trained / "quick" / "runs" / "ssat" / "checkpoints").glob("checkpoint_*.pt"))
    assert list((trained / "quick" / "runs" / "ssat").glob("events.out.tfevents.*"))
    manifest = trained / "data" / "synthetic_oct_quick" / "synthetic_oct.json"
    assert manifest.is_file()


def test_fit_detector_cli(fitted: Path):
    from monai.networks.nets import resnet10

    from monai_adv.bundle import load_weights
    from monai_adv.detectors import OutputDetector, load_detector

    net = load_weights(
        resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25),
        fitted / "quick" / "models" / "model.pt",
    )
    det = load_detector(fitted / "quick" / "models" / "detector.pt", net)
    # the default detector: the logit margin (it measured best on the shipped robust model)
    assert isinstance(det, OutputDetector) and det.statistic == "margin" and det.is_calibrated


def test_fit_detector_takes_the_detector_by_name(fitted: Path, tmp_path: Path):
    from monai.networks.nets import resnet10

    from monai_adv.bundle import load_weights
    from monai_adv.detectors import CombinedDetector, load_detector

    out = tmp_path / "combined.pt"
    run_cli(
        [
            "run",
            "--config_file",
            configs("train", "fit_detector"),
            "--detector_name",
            "combined",
            "--detector_file",
            str(out),
        ],
        fitted,
    )
    net = load_weights(
        resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25),
        fitted / "quick" / "models" / "model.pt",
    )
    det = load_detector(out, net)
    assert isinstance(det, CombinedDetector) and det.is_calibrated
    assert det.score(torch.rand(2, 1, 32, 32)).shape == (2,)
    # an unknown name stops before any work, naming the known ones
    from monai_adv.detectors import make_detector

    with pytest.raises(ValueError, match="unknown detector 'lid'.*mahalanobis"):
        make_detector("lid", net)


def test_evaluate_cli(fitted: Path):
    run_cli(["run", "--config_file", configs("train", "evaluate")], fitted)
    out = fitted / "quick" / "eval" / "ssat"
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "classification" and report["metric"] == "accuracy"
    assert 0.0 <= report["clean"] <= 1.0 and report["clean"] == report["details"]["accuracy"]
    assert isinstance(report["attacks"], list) and len(report["attacks"]) >= 4
    names = {a["name"] for a in report["attacks"]}
    # the detector-aware adaptive attack is in the grid once a detector is fitted
    assert {"fgsm_eps0.001", "pgd10_eps0.002", "adaptive_pgd20_eps0.004"} <= names
    for a in report["attacks"]:
        for key in ("name", "attack", "eps", "value", "auroc", "risk_system", "undetected_error"):
            assert key in a, key
        assert 0.0 <= a["value"] <= 1.0 and a["value"] == a["accuracy"]
        assert a["auroc"] is not None and 0.0 <= a["auroc"] <= 1.0
        assert isinstance(a["eps"], float)
    # several attacks at eps 0.004: the per-image worst case over them
    worst = {w["eps"]: w for w in report["worst_case"]}
    assert len(worst[0.004]["attacks"]) >= 3
    assert worst[0.004]["value"] <= min(a["value"] for a in report["attacks"] if a["eps"] == 0.004)
    assert not (out / "robustness_report.json").exists()  # one report, written once
    assert (out / "report.md").is_file() and (out / "accuracy_vs_eps.png").is_file()
    assert (out / "roc.png").is_file()


def test_inference_cli_on_real_sample(fitted: Path, tmp_path: Path):
    if SAMPLE.is_dir():
        data = SAMPLE
    else:  # no shared sample here: the quick synthetic test split
        data = fitted / "data" / "synthetic_oct_quick" / "test"
    images = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    out = tmp_path / "pred"
    run_cli(
        ["run", "--config_file", f"['configs/inference.json','{QUICK}']", "--dataset_dir", str(data),
         "--output_dir", str(out)],
        fitted,
    )  # fmt: skip
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(images)
    assert {os.path.realpath(r["image"]) for r in rows} == {os.path.realpath(p) for p in images}
    for r in rows[:20]:
        probs = [float(r[f"prob_{c}"]) for c in ("CNV", "DME", "DRUSEN", "NORMAL")]
        assert abs(sum(probs) - 1.0) < 1e-4
        assert r["pred_class"] in ("CNV", "DME", "DRUSEN", "NORMAL")
        assert r["adversarial_score"] != "" and r["adversarial_flag"] in ("0", "1")


def test_verify_net_in_out_cli(trained: Path):
    proc = run_cli(
        ["verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
         "configs/inference.json"],
        trained,
    )  # fmt: skip
    assert "verified" in proc.stdout + proc.stderr


def test_ckpt_export_torchscript_equals_eager(trained: Path):
    run_cli(
        ["ckpt_export", "network_def", "--filepath", "quick/models/model.ts", "--ckpt_file", "quick/models/model.pt",
         "--key_in_ckpt", "model", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"],
        trained,
    )  # fmt: skip
    from monai.bundle import ConfigParser

    from monai_adv.bundle import load_weights

    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    net = load_weights(
        parser.get_parsed_content("network_def"), trained / "quick" / "models" / "model.pt"
    ).eval()
    ts = torch.jit.load(str(trained / "quick" / "models" / "model.ts"), map_location="cpu").eval()
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), rtol=1e-5, atol=1e-5)


def test_torchrun_two_processes_gloo(bundle: Path, tmp_path: Path):
    run_cli(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
         "--config_file", configs("train", "multi_gpu_train"), "--ckpt_dir", str(tmp_path / "models"),
         "--run_dir", str(tmp_path / "runs")],
        bundle,
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()
    assert list((tmp_path / "runs" / "checkpoints").glob("checkpoint_*.pt"))


# ----------------------------------------------------------------------------------- ConfigWorkflow
@pytest.mark.parametrize("baseline", ["train_supervised", "train_madry", "train_trades"])
def test_baselines_through_config_workflow(trained: Path, baseline: str):
    w = workflow(trained, ["train", baseline], "train")
    w.initialize()
    assert w.check_properties() == []
    w.run()
    w.finalize()
    method = baseline.split("_", 1)[1]
    assert (trained / "quick" / "models" / method / "model.pt").is_file()


def test_check_properties(fitted: Path):
    w = workflow(fitted, ["train"], "train")
    w.initialize()
    assert w.check_properties() == []
    assert w.parser["label_fraction"] == 0.5
    for files in (["train", "fit_detector"], ["train", "evaluate"], ["inference"]):
        override = {"dataset_dir": str(fitted / "data" / "synthetic_oct_quick" / "test")}
        w = workflow(fitted, files, "infer", **(override if files == ["inference"] else {}))
        w.initialize()
        assert w.check_properties() == [], files


# --------------------------------------------------------------------------------------- bad settings
def test_missing_dataset_dir_is_a_clear_error(bundle: Path, tmp_path: Path):
    missing = tmp_path / "no_such_folder"
    w = workflow(bundle, ["train"], "train", dataset_dir=str(missing))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "does not exist" in causes(e.value) and str(missing) in causes(e.value)


def test_a_set_of_an_older_generator_is_neither_reused_nor_replaced(tmp_path: Path):
    from monai_adv.apps.oct import GENERATOR_VERSION, MANIFEST_NAME
    from monai_adv.bundle.data import prepare_oct_dataset

    cache = tmp_path / "synthetic"
    kw = dict(synthetic_dir=cache, n_per_class=1, image_size=16, progress=False)
    assert prepare_oct_dataset(cache, **kw) == str(cache)
    manifest = json.loads((cache / MANIFEST_NAME).read_text())
    stale = dict(manifest, arguments=dict(manifest["arguments"], generator_version=GENERATOR_VERSION - 1))
    (cache / MANIFEST_NAME).write_text(json.dumps(stale))
    for f in manifest["files"]:
        (cache / f["path"]).write_bytes(b"rendered by an older generator")
    # another run may still read the old set: the new one goes to a folder named by its arguments
    new = Path(prepare_oct_dataset(cache, **kw))
    assert new.name == f"synthetic@size16-seed0-train1-val1-test1-v{GENERATOR_VERSION}"
    assert json.loads((new / MANIFEST_NAME).read_text()) == manifest
    assert all((new / f["path"]).read_bytes() != b"rendered by an older generator" for f in manifest["files"])
    assert all(
        (cache / f["path"]).read_bytes() == b"rendered by an older generator" for f in manifest["files"]
    )
    assert prepare_oct_dataset(cache, **kw) == str(new)


def test_empty_dataset_dir_is_a_clear_error(trained: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    w = workflow(trained, ["train"], "train", dataset_dir=str(empty))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "empty folder" in causes(e.value)
    w = workflow(trained, ["inference"], "infer", dataset_dir=str(empty))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "holds no OCT image" in causes(e.value)


def test_evaluate_without_checkpoint_is_a_clear_error(trained: Path, tmp_path: Path):
    w = workflow(trained, ["train", "evaluate"], "infer", ckpt_dir=str(tmp_path / "none"))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    msg = causes(e.value)
    assert "model checkpoint" in msg and "does not exist" in msg and "train" in msg


def test_inference_on_png_dicom_and_nifti(fitted: Path, tmp_path: Path):
    import nibabel as nib
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    data = tmp_path / "scans"
    (data / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 52), dtype=np.uint8)).save(data / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 52), dtype=np.uint8)).save(data / ".hidden.png")
    (data / "notes.txt").write_text("not an image")
    nib.save(
        nib.Nifti1Image(rng.random((40, 52, 3)).astype(np.float32), np.eye(4)), data / "sub" / "vol.nii.gz"
    )
    write_oct_dicom(data / "sub" / "scan.dcm", rng.integers(0, 255, (2, 40, 52), dtype=np.uint8))
    out = tmp_path / "out"
    w = workflow(fitted, ["inference"], "infer", dataset_dir=str(data), output_dir=str(out))
    w.initialize()
    assert w.check_properties() == []
    w.run()
    w.finalize()
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = sorted((Path(r["image"]).name, r["frame"]) for r in rows)
    assert got == [
        ("a.png", ""),
        ("scan.dcm", "0"),
        ("scan.dcm", "1"),
        ("vol.nii.gz", "0"),
        ("vol.nii.gz", "1"),
        ("vol.nii.gz", "2"),
    ]
    assert all(r["adversarial_score"] != "" for r in rows)


def test_resume_continues_from_the_last_checkpoint(trained: Path, tmp_path: Path):
    ckpts = trained / "quick" / "runs" / "ssat" / "checkpoints"
    before = sorted(ckpts.glob("checkpoint_*.pt"))
    assert before
    # the best model goes to a copy of the models folder: the module's other tests use the network
    # the detector was fitted on
    models = tmp_path / "models"
    shutil.copytree(trained / "quick" / "models", models)
    w = workflow(trained, ["train"], "train", resume=True, max_epochs=2, ckpt_dir=str(models))
    w.initialize()
    w.run()
    trainer = w.parser.get_parsed_content("train#trainer")
    assert w.parser.get_parsed_content("train#checkpointer").resumed_from == before[-1]
    assert trainer.state.epoch == 2
    after = sorted(ckpts.glob("checkpoint_*.pt"))
    assert after[-1].name > before[-1].name
    w.finalize()


def test_compare_reports(tmp_path: Path, capsys):
    from monai_adv.bundle import compare_reports, main

    rep = {
        "task": "classification",
        "metric": "accuracy",
        "clean": 0.75,
        "n": 4,
        "details": {"accuracy": 0.75, "flag_rate": 0.25, "per_class_recall": {"CNV": 1.0, "DME": 0.5}},
        "attacks": [
            {
                "name": "fgsm_eps0.002",
                "attack": "FGSM",
                "eps": 0.002,
                "value": 0.5,
                "auroc": 0.8,
                "risk_system": 0.3,
            },
            {
                "name": "pgd_eps0.002",
                "attack": "PGD",
                "eps": 0.002,
                "value": 0.25,
                "auroc": 0.9,
                "risk_system": 0.4,
            },
        ],
        "worst_case": [{"eps": 0.002, "value": 0.25, "attacks": ["fgsm_eps0.002", "pgd_eps0.002"]}],
    }
    table = compare_reports({"a": rep, "b": rep})
    assert "| system | clean accuracy | recall CNV | recall DME | clean flag rate | notes |" in table
    assert "| a | 0.750 | 1.000 | 0.500 | 0.250 | |" in table
    assert "| clean | 0.0 | 0.750 | - | - | 0.750 | - | - |" in table
    assert "| fgsm_eps0.002 | 0.002 | 0.500 | 0.800 | 0.300 | 0.500 | 0.800 | 0.300 |" in table
    assert "| 0.002 | 0.250 | 0.250 |" in table  # the worst case
    # with detectors, the worst case's undetected error stands beside the worst-case accuracy
    a_det = {**rep, "worst_case": [{**rep["worst_case"][0], "undetected_error": 0.125}]}
    table = compare_reports({"a": a_det, "b": rep})
    assert "| eps | accuracy, a | accuracy, b | undetected error, a | undetected error, b |" in table
    assert "| 0.002 | 0.250 | 0.250 | 0.125 | - |" in table
    path = tmp_path / "ssat" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(rep))
    assert main(["compare", f"base={path}", str(path)]) == 0
    out = capsys.readouterr().out
    assert "base: accuracy" in out and "ssat: accuracy" in out
    with pytest.raises(FileNotFoundError, match="evaluate.json"):
        compare_reports({"x": tmp_path / "missing.json"})
    # a report.json written before the one schema is named as such
    old = tmp_path / "old" / "report.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"clean_accuracy": 0.5, "attacks": []}))
    with pytest.raises(ValueError, match="old layout"):
        compare_reports({"old": old})
    with pytest.raises(SystemExit):
        main(["compare", str(old)])
    assert "old layout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="different tasks"):
        compare_reports({"a": rep, "s": {**rep, "task": "segmentation", "metric": "mean_dice"}})


def test_attack_grid_aims_adaptive_attacks_at_the_detector_and_skips_them_without_one(caplog):
    from monai_adv.bundle import attack_grid

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    grid = [
        {"name": "fgsm", "attack": "FGSM", "eps": [0.001, 0.002]},
        {"name": "adaptive", "attack": "AdaptiveAttack", "eps": [0.004], "steps": 2},
        {"name": "worst", "attack": "AdaptiveWorstCase", "eps": [0.004], "standard": False},
    ]
    with caplog.at_level("WARNING"):
        attacks = attack_grid(net, grid, detector=None)
    assert list(attacks) == ["fgsm_eps0.001", "fgsm_eps0.002"]
    assert "'worst' (AdaptiveWorstCase) needs a detector" in caplog.text
    assert "needs a detector" in caplog.text
    with pytest.raises(ValueError, match="unknown attack 'NoSuchAttack'"):
        attack_grid(net, [{"name": "x", "attack": "NoSuchAttack", "eps": 0.1}])


def test_stratified_subset_keeps_the_first_items_of_each_class_in_order():
    from monai_adv.bundle import stratified_subset

    items = [{"image": f"{i}.png", "label": i % 3} for i in range(10)]  # classes 0,1,2,0,1,2,...
    sub = stratified_subset(items, 2)
    assert [d["image"] for d in sub] == ["0.png", "1.png", "2.png", "3.png", "4.png", "5.png"]
    assert [d["image"] for d in stratified_subset(items[:4], 3)] == ["0.png", "1.png", "2.png", "3.png"]
    assert stratified_subset(items, 0) == items and stratified_subset(items, None) == items
    with pytest.raises(ValueError, match="has no 'label'"):
        stratified_subset([{"image": "x.png"}], 1)


def test_demo_trains_fits_evaluates_and_compares_every_method(tmp_path: Path, capsys):
    from monai_adv.bundle import run_demo

    copy = tmp_path / "oct_robust_classification"
    shutil.copytree(
        BUNDLE, copy, ignore=shutil.ignore_patterns("data", "runs", "eval", "__pycache__", "*.pt", "*.ts")
    )
    with pytest.raises(ValueError, match="unknown method"):
        run_demo(copy, quick=True, methods=["supervised", "nope"])
    table = run_demo(copy, quick=True)  # the demo's systems, as make demo runs them
    systems = ("supervised", "trades", "ssat", "rst")
    for method in systems:
        report = json.loads((copy / "quick" / "eval" / method / "report.json").read_text())
        assert "adaptive_eps0.004" in {a["name"] for a in report["attacks"]}
        assert {"per_class_recall", "confusion_matrix", "degenerate"} <= set(report["details"])
        assert report["detector"]["class"] == "CombinedDetector"
        # the adaptive worst case at 1/255: the per-image worst over every attack there, with the detector
        (worst,) = [w for w in report["worst_case"] if w["eps"] == 0.004]
        assert {"pgd10_eps0.004", "apgd_ce20_eps0.004", "adaptive_eps0.004"} <= set(worst["attacks"])
        members = [a for a in report["attacks"] if a["name"] in worst["attacks"]]
        assert worst["undetected_error"] >= max(a["undetected_error"] for a in members) - 1e-9
        assert report["n"] == 8  # the demo's stratified subset: quick.json has 2 test scans per class
        assert f"{method}: accuracy" in table
    # the robust systems start from the supervised model and keep their own checkpoints; a smoke run
    # writes under quick/, never over the full run's models/ and eval/
    for method in ("trades", "rst"):
        assert (copy / "quick" / "models" / method / "model.pt").is_file()
    assert (copy / "quick" / "models" / "model.pt").is_file()  # the paper's SSAT: train.json's folder
    assert not (copy / "models" / "supervised").exists() and not (copy / "eval").exists()
    out = capsys.readouterr().out
    assert "| system | clean accuracy |" in out and "adaptive_eps0.004" in out
    assert "undetected error, rst" in out
    assert "the paper's SSAT loss exactly" in out  # each system's recipe is said


def test_demo_in_parallel_processes_waits_for_the_model_each_system_starts_from(tmp_path: Path, capsys):
    from monai_adv.bundle import BundleDescription
    from monai_adv.bundle.demo import _depends_on, run_demo

    copy = tmp_path / "oct_robust_classification"
    shutil.copytree(
        BUNDLE, copy, ignore=shutil.ignore_patterns("data", "runs", "eval", "__pycache__", "*.pt", "*.ts")
    )
    systems = BundleDescription.from_bundle(copy).systems
    assert _depends_on(copy, systems["ssat_robust"].configs, ["supervised", "madry"], "ssat_robust") == [
        "supervised"
    ]
    assert _depends_on(copy, systems["madry"].configs, ["supervised", "ssat_robust"], "madry") == []
    methods = ["supervised", "ssat_robust"]
    table = run_demo(copy, quick=True, methods=methods, jobs=2)
    out = capsys.readouterr().out
    lines = out.splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # the first training runs alone (it writes the data set); the fine-tuned system waits for its teacher
    assert at("supervised: train done") < at("ssat_robust: train started")
    # then trainings go first, the two runs side by side, one thread each
    assert at("ssat_robust: train started") < at("supervised: fit_detector started")
    assert "ssat_robust: train started (1 thread)" in out
    for method in methods:
        assert (copy / "quick" / "eval" / method / "report.json").is_file()
        assert f"{method}: accuracy" in table
        for step in ("train", "fit_detector", "evaluate"):
            assert (copy / "quick" / "logs" / f"{method}.{step}.log").stat().st_size > 0
    assert "all runs done" in out
    # a failing run stops the demo with its log named and its end shown
    with pytest.raises(
        RuntimeError, match=r"supervised: train failed \(exit code [1-9].*supervised\.train\.log"
    ):
        run_demo(copy, quick=True, methods=["supervised", "madry"], jobs=2, overrides={"max_epochs": "oops"})


def test_ssat_teacher_without_the_supervised_model_is_a_clear_error(bundle: Path, tmp_path: Path):
    missing = tmp_path / "supervised" / "model.pt"
    w = workflow(bundle, ["train", "train_ssat_teacher"], "train", teacher_file=str(missing))
    with pytest.raises(Exception) as e:
        w.initialize()
        w.run()
    text = causes(e.value)
    assert str(missing) in text and "train the supervised baseline first" in text


def test_training_repeats_exactly_for_a_seed(bundle: Path, tmp_path: Path):
    # the attacks draw eps and random starts from their own RandomState, which set_determinism does
    # not reach: train.json seeds them, so two runs with one seed give the same weights
    states = []
    for run in ("a", "b"):
        w = workflow(
            bundle, ["train"], "train", ckpt_dir=str(tmp_path / run), run_dir=str(tmp_path / f"{run}_runs")
        )
        w.initialize()
        w.run()
        w.finalize()
        states.append(torch.load(tmp_path / run / "model.pt", weights_only=True)["model"])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


# ------------------------------------------------------------------------- reliability (issue 12)
def test_a_wrong_dataset_dir_is_the_last_line_the_user_reads(bundle: Path, tmp_path: Path):
    missing = tmp_path / "no_such_folder"
    proc = run_cli(
        ["run", "--config_file", configs("train"), "--dataset_dir", str(missing)], bundle, ok=False
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: dataset_dir") and str(missing) in last and "does not exist" in last
    logged = [
        line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line and str(missing) in line
    ]
    assert len(logged) >= 2  # logged when found, and repeated after the traceback


def _kermany(root: Path, classes: dict[str, int], size: int = 24) -> Path:
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for folder, n in classes.items():
        d = root / "train" / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (rng.random((size, size)) * 255).astype("uint8")
            Image.fromarray(img).save(d / f"{folder.upper()}-{100 + i}-1.jpeg")
    return root


def test_the_bundle_checks_the_data_set_before_any_work(bundle: Path, tmp_path: Path):
    root = _kermany(tmp_path / "data", {"cnv": 2, "DME": 2, "Cnv_old": 1})
    (root / "train" / "DME" / "DME-105-1.jpeg").write_bytes(b"not a jpeg")
    w = workflow(bundle, ["train"], "train", dataset_dir=str(root), run_dir=str(tmp_path / "runs"))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    msg = causes(e.value)
    assert "failed the data-set check with 2 error(s)" in msg
    assert f"{root / 'train' / 'Cnv_old'}: unknown class folder" in msg  # not a new class
    assert f"{root / 'train' / 'DME' / 'DME-105-1.jpeg'}: unreadable" in msg
    assert not (tmp_path / "runs").exists()  # stopped before any work
    shutil.rmtree(root / "train" / "Cnv_old")
    (root / "train" / "DME" / "DME-105-1.jpeg").unlink()
    w = workflow(bundle, ["train"], "train", dataset_dir=str(root), label_fraction=1.5)
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "label_fraction must lie in (0, 1], got 1.5" in causes(e.value)


def test_inference_predicts_every_readable_file_and_lists_the_failures(fitted: Path, tmp_path: Path):
    test_split = fitted / "data" / "synthetic_oct_quick" / "test"
    src = sorted(p for p in test_split.rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg"))[:3]
    assert len(src) == 3
    data = tmp_path / "scans"
    data.mkdir()
    for p in src:
        shutil.copy(p, data / p.name)
    corrupt = data / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    args = ["run", "--config_file", f"['configs/inference.json','{QUICK}']", "--dataset_dir", str(data)]
    run_cli(args + ["--output_dir", str(out)], fitted)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.path.basename(r["image"]) for r in rows) == sorted(p.name for p in src)
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [os.path.realpath(r["image"]) for r in failures] == [os.path.realpath(corrupt)]
    assert "cannot read image file" in failures[0]["error"]
    # or stop before any work
    proc = run_cli(args + ["--output_dir", str(tmp_path / "strict"), "--on_error", "raise"], fitted, ok=False)
    assert proc.returncode != 0 and "broken.png" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "strict" / "predictions.csv").exists()


def test_evaluate_refuses_a_detector_fitted_on_another_network(fitted: Path, tmp_path: Path):
    from monai.networks.nets import resnet10

    from monai_adv.detectors import MahalanobisDetector, NetworkMismatchError

    torch.manual_seed(123)
    other = resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25).eval()
    det = MahalanobisDetector(other, progress=False).fit(torch.rand(16, 1, 32, 32))
    det.calibrate(torch.rand(16, 1, 32, 32), fpr=0.1)
    det.save(tmp_path / "detector.pt")
    w = workflow(fitted, ["train", "evaluate"], "infer", detector_file=str(tmp_path / "detector.pt"))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    chain = []
    err = e.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(c, NetworkMismatchError) for c in chain)
    assert "fitted on network" in causes(e.value) and str(tmp_path / "detector.pt") in causes(e.value)


def test_amp_switch_reads_cli_strings(bundle: Path):
    # from the command line, `--amp false` arrives as the string "false" (fire keeps lowercase words
    # as strings); it must switch mixed precision off, not on
    from monai_adv.precision import parse_amp, resolve_precision

    auto = resolve_precision("auto", "cpu").amp  # the default: bf16 only on a CPU that runs it natively
    for value, expected in (("false", False), ("true", True), (False, False), (True, True), ("auto", auto)):
        w = workflow(bundle, ["train", "train_supervised"], "train", amp=value)
        w.initialize()
        trainer = w.parser.get_parsed_content("train#trainer")
        assert trainer.amp is expected and trainer.precision.requested == parse_amp(value), value
    w = workflow(bundle, ["train", "train_supervised"], "train")
    w.initialize()
    assert w.parser.get_parsed_content("train#trainer").precision.requested == "auto"
