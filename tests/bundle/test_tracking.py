"""MONAI's experiment tracking, ``--tracking mlflow``, on every config of both OCT bundles.

Each bundle is copied once (no generated files) and its configs run at the tiniest size with tracking
on: the classification ``train.json`` through the command line exactly as a user types it, everything
else through ``ConfigWorkflow(..., tracking="mlflow")`` in this process (the code the command line
runs, without a new Python per config). The tests then open the SQLite store under the run's output
folder with ``MlflowClient`` and check what was logged: the training loss per iteration, the learning
rate, the validation metric, and for the evaluations the clean and the robust metrics per attack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

mlflow = pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[2]
QUICK = "configs/quick.json"
# the smallest useful evaluation: two attacks at one eps (so there is a per-image worst case)
TINY_GRID = [
    {"name": "fgsm", "attack": "FGSM", "eps": [0.004]},
    {"name": "pgd2", "attack": "PGD", "eps": [0.004], "steps": 2},
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _copy(name: str, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("tracking") / name
    shutil.copytree(
        REPO / "bundles" / name,
        dst,
        ignore=shutil.ignore_patterns("data", "runs", "eval", "quick", "__pycache__", "*.pt", "*.ts"),
    )
    return dst


def run_tracked(bundle: Path, files: list[str], **override):
    """``python -m monai.bundle run --config_file [...] --tracking mlflow`` in this process; the workflow."""
    from monai.bundle import ConfigWorkflow

    w = ConfigWorkflow(
        config_file=[str(bundle / "configs" / f"{f}.json") for f in files] + [str(bundle / QUICK)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=None,
        tracking="mlflow",
        bundle_root=str(bundle),
        **override,
    )
    w.initialize()
    w.run()
    w.finalize()
    return w


def runs(db: Path) -> list:
    """The MLflow runs in the SQLite store ``db``, oldest first."""
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    assert db.is_file(), f"no MLflow store at {db}"
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(db))
    found = []
    for e in client.search_experiments():
        found += client.search_runs([e.experiment_id])
    found.sort(key=lambda r: r.info.start_time)
    assert all(r.info.status == "FINISHED" for r in found)
    return found


def history(db: Path, run, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    client = MlflowClient(tracking_uri=path_to_sqlite_uri(db))
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


# ------------------------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def classification(tmp_path_factory) -> Path:
    """The classification bundle trained (SSAT, the command line) and evaluated with tracking on."""
    bundle = _copy("oct_robust_classification", tmp_path_factory)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           f"['configs/train.json','{QUICK}']", "--tracking", "mlflow"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    run_tracked(bundle, ["train", "train_supervised"])
    run_tracked(bundle, ["train", "fit_detector"])
    run_tracked(bundle, ["train", "evaluate"], attack_grid=TINY_GRID)
    run_tracked(bundle, ["inference"], dataset_dir=str(bundle / "data" / "synthetic_oct_quick" / "test"))
    return bundle


def test_classification_training_logs_loss_lr_and_validation(classification: Path):
    db = classification / "quick" / "eval" / "mlruns.db"  # output_dir of train.json
    ssat, supervised, detector = runs(db)[:3]
    for run in (ssat, supervised):  # SemiSupervisedAdversarialTrainer, AutocastSupervisedTrainer
        metrics = run.data.metrics
        assert {"train_loss", "lr_group_0", "train_accuracy", "val_accuracy"} <= set(metrics)
        losses = history(db, run, "train_loss")  # one value per iteration
        assert len(losses) == int(run.data.params["epoch_length"]) >= 1 and min(losses) > 0
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert {"loss_labeled", "loss_unlabeled", "attack_success"} <= set(ssat.data.metrics)
    # fit_detector.json: its evaluator's test accuracy and the clean flag rate of the detector
    assert {"test_accuracy", "uad_flag_rate"} <= set(detector.data.metrics)
    assert (classification / "quick" / "models" / "supervised" / "model.pt").is_file()


def test_classification_evaluation_logs_clean_and_robust_metrics(classification: Path):
    out = classification / "quick" / "eval" / "ssat"
    (run,) = runs(out / "mlruns.db")
    metrics = run.data.metrics
    report = json.loads((out / "report.json").read_text())
    assert metrics["accuracy"] == pytest.approx(report["clean"])
    for a in report["attacks"]:
        assert metrics[f"accuracy/{a['name']}"] == pytest.approx(a["value"])
        assert 0.0 <= metrics[f"uad_auroc/{a['name']}"] <= 1.0  # the detector handler's metrics too
    assert {a["name"] for a in report["attacks"]} == {"fgsm_eps0.004", "pgd2_eps0.004"}
    (worst,) = report["worst_case"]
    assert worst["value"] <= min(a["value"] for a in report["attacks"])
    assert "uad_flag_rate" in metrics


def test_classification_inference_tracks_the_detector(classification: Path):
    out = classification / "quick" / "eval" / "inference"
    (run,) = runs(out / "mlruns.db")
    assert 0.0 <= run.data.metrics["uad_flag_rate"] <= 1.0
    assert (out / "predictions.csv").is_file()


def test_overlay_that_edits_the_validation_handlers_keeps_them(classification: Path):
    # train_ssat_robust.json changes validate#handlers#2 (the CheckpointSaver): MONAI appends its MLflow
    # handler at the end of the list, so index 2 is still the CheckpointSaver
    run_tracked(classification, ["train", "train_ssat_robust"], max_epochs=1)
    assert (classification / "quick" / "models" / "ssat_robust" / "model.pt").is_file()
    latest = runs(classification / "quick" / "eval" / "mlruns.db")[-1]
    assert {"train_loss", "loss_labeled_adv", "val_accuracy"} <= set(latest.data.metrics)


# ------------------------------------------------------------------------------------- segmentation
@pytest.fixture(scope="module")
def segmentation(tmp_path_factory) -> Path:
    bundle = _copy("oct_layer_segmentation", tmp_path_factory)
    run_tracked(bundle, ["train"])
    run_tracked(bundle, ["train", "evaluate"], attack_grid=TINY_GRID)
    run_tracked(bundle, ["inference"])
    return bundle


def test_segmentation_training_logs_loss_lr_and_validation(segmentation: Path):
    db = segmentation / "quick" / "eval" / "mlruns.db"
    (run,) = runs(db)
    assert {"train_loss", "lr_group_0", "train_dice", "dice"} <= set(run.data.metrics)  # dice: validation
    assert len(history(db, run, "train_loss")) == int(run.data.params["epoch_length"]) >= 1


def test_segmentation_evaluation_logs_clean_and_robust_metrics(segmentation: Path):
    out = segmentation / "quick" / "eval" / "ssat"
    (run,) = runs(out / "mlruns.db")
    metrics = run.data.metrics
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "segmentation" and metrics["dice"] == pytest.approx(report["clean"])
    for a in report["attacks"]:
        assert metrics[f"dice/{a['name']}"] == pytest.approx(a["value"])
        assert f"hd95/{a['name']}" in metrics
    (worst,) = report["worst_case"]
    assert worst["attacks"] == ["fgsm_eps0.004", "pgd2_eps0.004"]
    assert worst["value"] <= min(a["value"] for a in report["attacks"]) + 1e-6


def test_segmentation_inference_run_is_tracked(segmentation: Path):
    (run,) = runs(segmentation / "quick" / "eval" / "inference" / "mlruns.db")
    assert run.data.params["max_epochs"] == "1"
    assert (segmentation / "quick" / "eval" / "inference" / "masks.csv").is_file()


# ---------------------------------------------------------------------------------- the trainer alone
def test_mlflow_logs_the_loss_of_a_trainer_without_decollation(tmp_path):
    """MONAI's default tracking transform, ``from_engine(["loss"], first=True)``, on the batch dict of an
    adversarial trainer with ``decollate=False``: the logged value is the iteration's loss."""
    from monai.handlers import MLFlowHandler, from_engine
    from monai.utils import path_to_sqlite_uri

    from monai_adv.engines import SupervisedAdversarialTrainer
    from monai_adv.transforms import FGSM

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    data = [{"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 2, 0])} for _ in range(2)]
    losses = []
    db = tmp_path / "mlruns.db"
    handler = MLFlowHandler(
        tracking_uri=path_to_sqlite_uri(db),
        output_transform=from_engine(["loss"], first=True),
        tag_name="train_loss",
        close_on_complete=True,
    )
    trainer = SupervisedAdversarialTrainer(
        "cpu", 1, data, net, torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(),
        FGSM(net, 0.01), method="madry", train_handlers=[handler], decollate=False,
    )  # fmt: skip
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item())
    )
    trainer.run()
    assert isinstance(trainer.state.output, dict)  # still the batch dict: nothing decollated
    (run,) = runs(db)
    assert history(db, run, "train_loss") == pytest.approx(losses)
    assert history(db, run, "lr_group_0") == pytest.approx([0.1, 0.1])
