"""``python -m monai_adv.bundle audit`` and the ``robustness.json`` overlay on model-zoo bundles it has never seen.

The fixtures are scratch copies of three public model-zoo bundles (configs only) with random weights and tiny
synthetic data (``tests/bundle/zoo.py``): nothing here knows their key layouts; the audit finds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundle.zoo import requires_zoo, zoo_bundle

pytestmark = requires_zoo


def _audit(zb, role: str, *args: str) -> tuple[int, str, Path]:
    """Run the audit command in-process on the scratch bundle; returns (exit code, stderr text, output folder)."""
    from monai_adv.bundle.cli import main

    out = zb.root / "eval" / "robustness"
    argv = ["audit", str(zb.root), "--config", *zb.configs[role], "--output-dir", str(out), *args]
    for key, value in zb.overrides[role].items():
        argv += [f"--{key}", repr(value) if not isinstance(value, str) else value]
    try:
        code = main(argv)
        return code, "", out
    except SystemExit as e:
        return int(e.code or 0), str(e), out


def _check_schema(report: dict, task: str, metric: str) -> None:
    assert report["task"] == task and report["metric"] == metric
    assert 0.0 <= report["clean"] <= 1.0
    assert report["attacks"], "no attack entries"
    for a in report["attacks"]:
        assert {"name", "eps", "value"} <= set(a)
        assert a["eps"] > 0 and (a["value"] is None or 0.0 <= a["value"] <= 1.0)


def test_audit_classification_template(tmp_path: Path):
    zb = zoo_bundle("classification_template", tmp_path)
    code, err, out = _audit(zb, "evaluate", "--attacks", "fgsm,pgd", "--eps", "0.01,0.05", "--quick")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    _check_schema(report, "classification", "accuracy")
    assert {a["name"] for a in report["attacks"]} == {"fgsm_0.01", "fgsm_0.05", "pgd_0.01", "pgd_0.05"}
    assert report["activation"] == "softmax" and report["n"] == 4
    # ScaleIntensityd rescales each image by its own range: eps stays in network units, and the report says why
    assert report["original_units"] is None and "own range" in report["intensity_map"]
    # PGD is at least as strong as FGSM at the same eps (per image, a stronger attack cannot leave more correct
    # on average here: both start from the same clean predictions; allow one image of slack for rounding)
    val = {a["name"]: a["value"] for a in report["attacks"]}
    assert val["pgd_0.05"] <= val["fgsm_0.05"] + 0.25 + 1e-6
    assert (out / "report.md").is_file()
    # the robust metrics reach engine.state.metrics, so MONAI's MetricsSaver and TensorBoard see them
    metrics = (out / "metrics.csv").read_text()
    assert "accuracy/pgd_0.05" in metrics and "accuracy/worst" in metrics
    assert list((out / "tensorboard").iterdir())
    assert not [p for p in out.parent.iterdir() if ".incomplete" in p.name], "staging folder left behind"


def test_audit_with_a_detector_reports_detection_and_risk(tmp_path: Path, capsys):
    """--detector FILE: a detector fitted on the bundle's own network scores every input of the audit."""
    from monai_adv.bundle.audit import find_evaluator
    from monai_adv.bundle.introspect import first_batch, load_bundle_config, load_evaluator_weights
    from monai_adv.detectors import OutputDetector

    zb = zoo_bundle("classification_template", tmp_path)
    files = [zb.root / f for f in zb.configs["evaluate"]]
    parser = load_bundle_config(zb.root, files, dict(zb.overrides["evaluate"]))
    evaluator = parser.get_parsed_content(find_evaluator(parser, files))
    load_evaluator_weights(evaluator, parser, None, None)
    batch = evaluator.prepare_batch(first_batch(evaluator.data_loader), evaluator.state.device, False)
    det = OutputDetector(evaluator.network.eval(), progress=False).fit(batch[0], use_labels=False)
    det.calibrate(batch[0], fpr=0.25)
    det.save(tmp_path / "detector.pt")
    code, err, out = _audit(
        zb,
        "evaluate",
        "--attacks",
        "pgd",
        "--eps",
        "0.05",
        "--quick",
        "--detector",
        str(tmp_path / "detector.pt"),
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["detector"]["class"] == "OutputDetector" and report["detector_file"].endswith("detector.pt")
    (entry,) = report["attacks"]
    assert entry["auroc"] is not None and set(entry["risk_at_priors"]) == {"0.01", "0.1", "0.5"}
    assert 0.0 <= entry["undetected_error"] <= 1.0
    assert report["details"]["referral_curve"]["referral_rate"][0] == 0.0
    # a detector of another network is refused, naming the file
    other = OutputDetector(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)), progress=False)
    other.network(batch[0])
    other.fit(batch[0]).save(tmp_path / "other.pt")
    code, err, _ = _audit(
        zb,
        "evaluate",
        "--attacks",
        "pgd",
        "--eps",
        "0.05",
        "--quick",
        "--detector",
        str(tmp_path / "other.pt"),
    )
    assert code == 2 and "was fitted on network" in capsys.readouterr().err


def test_audit_spleen_eps_in_hu_and_spacing(tmp_path: Path):
    zb = zoo_bundle("spleen_ct_segmentation", tmp_path)
    code, err, out = _audit(
        zb, "evaluate", "--attacks", "pgd", "--eps-original", "10", "--quick", "--num-images", "1"
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    _check_schema(report, "segmentation", "mean_dice")
    (entry,) = report["attacks"]
    # ScaleIntensityRanged maps [-57, 164] HU to [0, 1]: 10 HU is 10 / 221 in network units
    assert entry["eps"] == pytest.approx(10 / 221, rel=1e-6)
    assert entry["eps_original"] == pytest.approx(10.0) and entry["original_units"] == "HU"
    assert report["value_range"] == [0.0, 1.0]
    assert report["evaluator_id"] == "validate#evaluator"
    # HD95 in millimetres: the spacing (1.5 x 1.5 x 2 mm) comes from each volume's metadata
    assert report["details"]["distance_units"] == "mm"


def test_audit_label_free_on_inference_config(tmp_path: Path):
    zb = zoo_bundle("spleen_ct_segmentation", tmp_path)
    code, err, out = _audit(zb, "inference", "--label-free", "--attacks", "pgd", "--eps", "0.05", "--quick")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["label_free"] is True
    assert report["clean"] == pytest.approx(1.0)  # the clean prediction is its own label
    assert "models/model.pt" in report["weights"]  # loaded by the config's initialize (load_pretrain)


def test_audit_segmentation_template_finds_test_config(tmp_path: Path):
    """No --config: the audit picks the labelled standalone test config itself; --mlflow logs the metrics."""
    from monai_adv.bundle.introspect import default_config_files

    zb = zoo_bundle("segmentation_template", tmp_path)
    assert [p.name for p in default_config_files(zb.root)] == ["test.yaml"]
    from monai_adv.bundle.cli import main

    argv = ["audit", str(zb.root), "--attacks", "fgsm,segpgd", "--eps", "0.05", "--quick", "--mlflow"]
    for key, value in zb.overrides["evaluate"].items():
        argv += [f"--{key}", str(value)]
    assert main(argv) == 0
    report = json.loads((zb.root / "eval" / "robustness" / "report.json").read_text())
    _check_schema(report, "segmentation", "mean_dice")
    # the bundle's Dice leaves the background out (include_background false), and so does the report
    assert len(report["class_names"]) == 3 and "background" not in report["class_names"]
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    client = MlflowClient(tracking_uri=path_to_sqlite_uri(str(zb.root / "eval" / "robustness" / "mlflow.db")))
    (experiment,) = [e for e in client.search_experiments() if e.name == "monai_adv_audit"]
    (run,) = client.search_runs([experiment.experiment_id])
    logged = run.data.metrics
    assert logged["dice/segpgd_0.05"] == pytest.approx(report["attacks"][1]["value"], abs=1e-6)
    assert logged["dice"] == pytest.approx(report["clean"], abs=1e-6) and "dice/worst" in logged


def test_audit_refuses_what_it_cannot_audit(tmp_path: Path, capsys):
    zb = zoo_bundle("classification_template", tmp_path)
    (zb.root / "models" / "model.pt").unlink()
    code, _, out = _audit(zb, "evaluate", "--attacks", "fgsm", "--eps", "0.01")
    assert code == 2
    err = capsys.readouterr().err
    assert "no weights found" in err and "ckpt_path" in err
    assert not out.exists() or not (out / "report.json").exists()
    # no labels and no --label-free: one line naming the cause and the flag
    zs = zoo_bundle("spleen_ct_segmentation", tmp_path / "s")
    code, _, out = _audit(zs, "inference", "--attacks", "pgd", "--eps", "0.05")
    assert code == 2
    assert "--label-free" in capsys.readouterr().err
    assert not (out / "report.json").exists()


def test_robustness_overlay_with_monai_bundle_run(tmp_path: Path):
    """The same audit as a config overlay, stacked with MONAI's own syntax."""
    from monai_adv.bundle.overlays import overlay_path

    zb = zoo_bundle("classification_template", tmp_path)
    files = [str(zb.root / f) for f in zb.configs["evaluate"]] + [str(overlay_path("robustness"))]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files), "--num_workers", "0"]
    cmd += ["--robustness#attacks", "fgsm", "--robustness#eps", "[0.02]", "--robustness#quick", "True"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=zb.root, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((zb.root / "eval" / "robustness" / "report.json").read_text())
    _check_schema(report, "classification", "accuracy")
    assert [a["name"] for a in report["attacks"]] == ["fgsm_0.02"]


def test_intensity_map_closed_forms():
    from monai.transforms import Compose, NormalizeIntensityd, ScaleIntensityd, ScaleIntensityRanged

    from monai_adv.bundle.introspect import intensity_map

    m = intensity_map(Compose([ScaleIntensityRanged("image", -57, 164, 0.0, 1.0, clip=True)]), modality="CT")
    assert m.scale == pytest.approx(1 / 221) and m.original_units == "HU" and m.value_range == (0.0, 1.0)
    assert m.to_network(221.0) == pytest.approx(1.0) and m.to_original(0.5) == pytest.approx(110.5)
    m = intensity_map(Compose([NormalizeIntensityd("image", subtrahend=100.0, divisor=50.0)]))
    assert m.scale == pytest.approx(1 / 50) and m.value_range is None
    m = intensity_map(Compose([NormalizeIntensityd("image")]))  # each image's own statistics: no fixed map
    assert m.scale is None and "own mean" in m.description
    with pytest.raises(Exception, match="--eps"):
        m.to_network(1.0)
    # two maps compose: a window, then a fixed z-score
    m = intensity_map(
        Compose(
            [
                ScaleIntensityRanged("image", 0, 100, 0.0, 1.0),
                NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25),
            ]
        )
    )
    assert m.scale == pytest.approx(0.01 / 0.25)
    m = intensity_map(Compose([ScaleIntensityd("image", factor=1.0)]))
    assert m.scale == pytest.approx(2.0)


def test_parse_overrides_and_activation():
    from monai.transforms import Activationsd, AsDiscreted, Compose

    from monai_adv.bundle.introspect import output_activation, parse_overrides

    assert parse_overrides(["--a#b", "0", "--c", "False", "--d", "[1,2]", "--e=x/y"]) == {
        "a#b": 0,
        "c": False,
        "d": [1, 2],
        "e": "x/y",
    }
    with pytest.raises(Exception, match="no value"):
        parse_overrides(["--a"])
    assert (
        output_activation(
            Compose([Activationsd("pred", sigmoid=True), AsDiscreted("pred", threshold=0.5)]), 3
        )
        == "sigmoid"
    )
    assert output_activation(Compose([Activationsd("pred", softmax=True)]), 3) == "softmax"
    assert output_activation(None, 1) == "sigmoid" and output_activation(None, 4) == "softmax"


def test_audit_sigmoid_multilabel_3d(tmp_path: Path):
    """A BraTS-style bundle written here from scratch: 3 overlapping sigmoid channels, 3D, SegResNet."""
    import nibabel as nib
    import numpy as np

    root = tmp_path / "brats_like"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        img = rng.normal(0, 1, (16, 16, 16)).astype(np.float32)
        lbl = np.zeros((3, 16, 16, 16), np.uint8)
        lbl[:, 4:12, 4:12, 4:12] = 1
        lbl[2, 6:10, 6:10, 6:10] = 1
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / f"img{i}.nii.gz"))
        nib.save(nib.Nifti1Image(np.moveaxis(lbl, 0, -1), np.eye(4)), str(root / f"lbl{i}.nii.gz"))
        items.append({"image": str(root / f"img{i}.nii.gz"), "label": str(root / f"lbl{i}.nii.gz")})
    config = {
        "imports": ["$import torch"],
        "device": "$torch.device('cpu')",
        "network_def": {
            "_target_": "SegResNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 3,
            "init_filters": 8,
            "blocks_down": [1, 1],
            "blocks_up": [1],
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": ["image", "label"]},
                {"_target_": "EnsureChannelFirstd", "keys": ["image", "label"]},
                {"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": 0.0, "divisor": 1.0},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": items, "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
        },
        "run": ["$@evaluator.run()"],
    }
    (root / "configs" / "evaluate.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text(json.dumps({"name": "brats-like"}))
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(
        spatial_dims=3, in_channels=1, out_channels=3, init_filters=8, blocks_down=[1, 1], blocks_up=[1]
    )
    torch.save(net.state_dict(), root / "models" / "model.pt")
    from monai_adv.bundle.audit import audit_bundle

    report = audit_bundle(root, attacks="pgd,sea", eps=[0.5], quick=True)
    _check_schema(report, "segmentation", "mean_dice")
    assert report["activation"] == "sigmoid" and report["spatial_dims"] == 3
    assert len(report["class_names"]) == 3
    # a fixed z-score (subtrahend 0, divisor 1): eps in original units equals eps
    assert report["attacks"][0]["eps_original"] == pytest.approx(0.5)
    assert [a["name"] for a in report["attacks"]] == ["pgd_0.5", "sea_0.5"]


@pytest.mark.parametrize(
    "bundle, attacks, task",
    [
        ("oct_robust_classification", "fgsm,pgd", "classification"),
        ("oct_layer_segmentation", "pgd,segpgd", "segmentation"),
    ],
)
def test_audit_oct_bundles(tmp_path: Path, bundle: str, attacks: str, task: str):
    """Our own bundles are audited the same way (random weights, their quick configs)."""
    import shutil

    from monai.bundle import ConfigParser

    from monai_adv.bundle.cli import main

    root = tmp_path / bundle
    shutil.copytree(Path(__file__).resolve().parents[2] / "bundles" / bundle, root)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / "train.json"), str(root / "configs" / "quick.json")])
    parser["bundle_root"] = str(root)
    ckpt_dir = Path(parser.get_parsed_content("ckpt_dir"))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), ckpt_dir / "model.pt")
    configs = ["configs/train.json", "configs/evaluate.json", "configs/quick.json"]
    argv = ["audit", str(root), "--config", *configs, "--attacks", attacks, "--quick", "--num-images", "2"]
    assert main(argv) == 0
    report = json.loads((root / "eval" / "robustness" / "report.json").read_text())
    _check_schema(report, task, "accuracy" if task == "classification" else "mean_dice")
    assert "model.pt" in report["weights"]  # loaded by the network's own config expression


def test_engine_postprocessing_found_without_the_config():
    """The overlay has only the evaluator object: its postprocessing is read back from the engine."""
    from monai.engines import SupervisedEvaluator
    from monai.transforms import Activationsd, Compose

    from monai_adv.bundle.introspect import engine_postprocessing, output_activation

    post = Compose([Activationsd("pred", sigmoid=True)])
    engine = SupervisedEvaluator(
        "cpu", [{"image": torch.zeros(1, 1, 4, 4)}], torch.nn.Identity(), postprocessing=post
    )
    assert engine_postprocessing(engine) is post
    assert output_activation(engine_postprocessing(engine), 3) == "sigmoid"
    plain = SupervisedEvaluator("cpu", [{"image": torch.zeros(1, 1, 4, 4)}], torch.nn.Identity())
    assert engine_postprocessing(plain) is None


def test_intensity_map_bounds_follow_the_last_bounding_transform():
    from monai.transforms import Compose, RandGaussianNoised, ScaleIntensityd, ScaleIntensityRanged

    from monai_adv.bundle.introspect import intensity_map

    # noise, then a min-max scaling (the model zoo's classification template): bounded, no fixed map
    m = intensity_map(Compose([RandGaussianNoised("image"), ScaleIntensityd("image")]))
    assert m.value_range == (0.0, 1.0) and m.scale is None
    # a clipping window, then noise: the noise moves values out of the window
    m = intensity_map(
        Compose([ScaleIntensityRanged("image", 0, 10, 0.0, 1.0, clip=True), RandGaussianNoised("image")])
    )
    assert m.value_range is None and m.scale is None and "RandGaussianNoise" in m.description


@pytest.mark.parametrize(
    "name, role, evaluator, extra",
    [
        ("segmentation_template", "evaluate", "@evaluator", {}),
        ("spleen_ct_segmentation", "evaluate", "@validate#evaluator", {}),
        # weights that the inference config's initialize loads are invisible to the overlay: named explicitly
        ("spleen_ct_segmentation", "inference", "@evaluator", {"robustness#label_free": True}),
    ],
)
def test_robustness_overlay_on_each_fixture(
    tmp_path: Path, name: str, role: str, evaluator: str, extra: dict
):
    """The overlay stacked on the other fixtures' configs, run as ``monai.bundle run`` runs them (ConfigWorkflow)."""
    from monai.bundle import ConfigWorkflow

    from monai_adv.bundle.overlays import overlay_path

    zb = zoo_bundle(name, tmp_path)
    files = [str(zb.root / f) for f in zb.configs[role]] + [str(overlay_path("robustness"))]
    overrides = {
        **zb.overrides[role],
        "robustness#evaluator": evaluator,
        "robustness#attacks": "pgd",
        "robustness#eps": [0.05],
        "robustness#quick": True,
        "robustness#num_images": 1,
        **extra,
    }
    if role == "inference":
        overrides["robustness#weights"] = str(zb.root / "models" / "model.pt")
    w = ConfigWorkflow(
        config_file=files, workflow_type=None, logging_file=False, bundle_root=str(zb.root), **overrides
    )
    w.initialize()
    w.run()
    w.finalize()
    report = json.loads((zb.root / "eval" / "robustness" / "report.json").read_text())
    _check_schema(report, "segmentation", "mean_dice")
    assert report["label_free"] is (role == "inference")
