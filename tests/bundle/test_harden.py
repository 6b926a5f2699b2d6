"""``harden``: MONAI model-zoo bundles (the three fixtures of ../shared/model-zoo, random weights, tiny data)
trained with Madry, TRADES, RST and SSAT through their own training configs, with the overlay ``harden``
writes stacked as ``monai.bundle run`` stacks it; the CLI, the shipped overlays, the clear errors, and the
OCT bundle's ``train_rst.json``.

Each run is one or two iterations on 32 px images / 16^3 patches; the trained network must differ from the
one the run started from, and the bundle's own checkpoint saver must have written the trained weights.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from monai_adv.bundle.cli import main
from monai_adv.bundle.harden import (
    OVERLAYS,
    HardenError,
    adversarial_trainer,
    adversarial_training_overlay,
    find_trainer_ids,
    harden_bundle,
    infer_value_range,
    training_overlay_path,
    unlabeled_preprocessing,
)
from monai_adv.engines import (
    MadryAdversarialTrainer,
    RobustSelfTrainingTrainer,
    SemiSupervisedAdversarialTrainer,
    TradesAdversarialTrainer,
)
from tests.bundle.zoo import ZooBundle, requires_zoo, zoo_bundle

REPO = Path(__file__).resolve().parents[2]
OCT = REPO / "bundles" / "oct_robust_classification"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAINER_CLASS = {
    "madry": MadryAdversarialTrainer,
    "trades": TradesAdversarialTrainer,
    "rst": RobustSelfTrainingTrainer,
    "ssat": SemiSupervisedAdversarialTrainer,
}


def _tiny(zb: ZooBundle) -> dict:
    """The fixture's training overrides, made one iteration of a batch of two (one validation volume for spleen)."""
    ov = dict(zb.overrides["train"])
    if zb.name == "spleen_ct_segmentation":
        ov["validate#dataset#data"] = (
            "$[{'image': i, 'label': l} for i, l in zip(@images[-1:], @labels[-1:])]"
        )
    else:
        ov.update(batch_size=2, num_epochs=1)
        ov["trainer#epoch_length"] = 1
    return ov


def _unlabeled(zb: ZooBundle, tmp_path: Path) -> dict:
    """Unlabeled images: a folder (classification, spleen), or a datalist JSON (the segmentation template keeps
    its labels beside the images, so a folder would list them too)."""
    if zb.name == "classification_template":
        return {"unlabeled_dir": str(zb.data / "test_data")}
    if zb.name == "spleen_ct_segmentation":
        return {"unlabeled_dir": str(zb.data / "imagesTs")}
    items = [{"image": str(p)} for p in sorted((zb.data / "test_data").glob("img*.nii.gz"))]
    path = tmp_path / "unlabeled.json"
    path.write_text(json.dumps({"unlabeled": items}))
    return {"unlabeled_list": str(path)}


def _run_with_overlay(zb: ZooBundle, overlay: str, overrides: dict):
    """Run the bundle's train config with the overlay stacked last, as ``monai.bundle run`` does; returns the
    trainer, the network's weights when training started (after the bundle's own checkpoint loading) and the
    time it started."""
    from monai.bundle import ConfigWorkflow

    files = [str(zb.root / c) for c in zb.configs["train"]] + [overlay]
    w = ConfigWorkflow(
        config_file=files, workflow_type=None, logging_file=False, bundle_root=str(zb.root), **overrides
    )
    w.initialize()
    trainer_id = find_trainer_ids(w.parser.get())[0]
    trainer = w.parser.get_parsed_content(trainer_id)
    start = {}

    @trainer.on(Events.STARTED)  # after the bundle's handlers (CheckpointLoader) attached before it
    def snapshot(engine):
        start.update({k: v.detach().clone() for k, v in engine.network.state_dict().items()})

    began = time.time() - 1
    w.run()
    w.finalize()
    return trainer, start, began


def _new_checkpoints(root: Path, since: float) -> list[Path]:
    return [
        p for p in root.rglob("*.pt") if p.stat().st_mtime >= since and p.name != "model_before_harden.pt"
    ]


def _holds(path: Path, weights: dict) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # e.g. the templates' final checkpoint, which also pickles their MetricLogger
        return False
    state = state.get("model", state) if isinstance(state, dict) else state
    return all(k in state and torch.equal(state[k].float(), v.float()) for k, v in weights.items())


@requires_zoo
@pytest.mark.parametrize("method", ["madry", "trades", "rst", "ssat"])
@pytest.mark.parametrize(
    "name", ["classification_template", "segmentation_template", "spleen_ct_segmentation"]
)
def test_harden_trains_each_fixture_bundle_with_each_method(name, method, tmp_path):
    zb = zoo_bundle(name, tmp_path)
    overrides = _tiny(zb)
    extra = _unlabeled(zb, tmp_path) if method in ("rst", "ssat") else {}
    result = harden_bundle(zb.root, method, eps=0.01, steps=1, overrides=overrides, dry_run=True, **extra)
    assert result.trainer_id == ("train#trainer" if name == "spleen_ct_segmentation" else "trainer")
    if method == "rst":  # the bundle's own weights teach
        assert result.settings["teacher_file"] == str(zb.root / "models" / "model.pt")
    trainer, start, began = _run_with_overlay(zb, result.overlay, overrides)

    assert type(trainer) is TRAINER_CLASS[method]
    assert trainer.state.iteration >= 1
    assert trainer.attack.eps == pytest.approx(0.01)
    assert trainer.attack.spatial_dims == (2 if name == "classification_template" else 3)
    final = {k: v.detach().clone() for k, v in trainer.network.state_dict().items() if v.is_floating_point()}
    assert any(not torch.equal(start[k], v) for k, v in final.items()), "the weights did not change"
    written = _new_checkpoints(zb.root, began)
    assert written, "the bundle's checkpoint saver wrote nothing"
    assert any(_holds(p, final) for p in written), [str(p) for p in written]
    if name == "spleen_ct_segmentation":  # where the bundle writes it: its validation's best model
        assert zb.root / "models" / "model.pt" in written


@requires_zoo
def test_cli_hardens_keeps_the_weights_and_prints_the_command(tmp_path, capsys):
    zb = zoo_bundle("spleen_ct_segmentation", tmp_path)
    before = (zb.root / "models" / "model.pt").read_bytes()
    args = ["harden", str(zb.root), "--method", "trades", "--eps", "0.02", "--steps", "1"]
    for k, v in _tiny(zb).items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, list) else str(v)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "TradesAdversarialTrainer" in out and "trainer id 'train#trainer'" in out
    assert (
        "python -m monai.bundle run --config_file \"['configs/train.json','configs/harden_trades.json']\""
        in out
    )
    assert (
        "--train#trainer#amp False" in out and "--train#random_transforms#0#spatial_size '[16,16,16]'" in out
    )
    # the bundle's validation saver replaced models/model.pt; the weights it had are kept
    assert (zb.root / "models" / "model_before_harden.pt").read_bytes() == before
    assert (zb.root / "models" / "model.pt").read_bytes() != before
    overlay = json.loads((zb.root / "configs" / "harden_trades.json").read_text())
    assert overlay["harden"]["method"] == "trades" and overlay["harden"]["eps"] == 0.02


@requires_zoo
def test_shipped_overlays_stack_on_a_bundle_with_monai_syntax(tmp_path):
    """The package's overlay for a top-level ``trainer`` id, its settings given as ``--harden#...`` overrides."""
    for trainer_id, name in OVERLAYS.items():
        shipped = json.loads(Path(training_overlay_path(trainer_id)).read_text())
        assert shipped == adversarial_training_overlay(trainer_id)  # the files are what the code writes
        assert Path(training_overlay_path(trainer_id)).name == name
    zb = zoo_bundle("classification_template", tmp_path)
    overrides = {**_tiny(zb), "harden#method": "trades", "harden#eps": 0.02, "harden#steps": 1}
    trainer, start, _ = _run_with_overlay(zb, training_overlay_path("trainer"), overrides)
    assert type(trainer) is TradesAdversarialTrainer and trainer.attack.eps == pytest.approx(0.02)
    assert trainer.attack.value_range == (0.0, 1.0)  # read from the bundle's ScaleIntensityd
    with pytest.raises(ValueError, match="--trainer-id"):
        training_overlay_path("my#trainer")


@requires_zoo
def test_bundles_that_cannot_be_hardened_get_one_clear_line(tmp_path, capsys):
    zb = zoo_bundle("segmentation_template", tmp_path)
    cases = [
        (["--method", "ssat"], "'ssat' trains on unlabeled data too: give --unlabeled-dir"),
        (["--method", "rst", "--unlabeled-dir", str(tmp_path / "nowhere")], "is not a folder"),
        (["--method", "madry", "--trainer-id", "nope"], "--trainer-id 'nope' is not a config item"),
        (["--method", "madry", "--config", "configs/inference.yaml"], "no trainer found in inference.yaml"),
    ]
    for args, message in cases:
        assert main(["harden", str(zb.root), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("ERROR: ") and message in err[-1], err[-1]
    # rst without any weights to teach
    (zb.root / "models" / "model.pt").unlink()
    data = zb.data / "test_data"
    assert main(["harden", str(zb.root), "--method", "rst", "--unlabeled-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "needs a teacher" in err and "--teacher" in err
    with pytest.raises(HardenError, match="unknown preset or training method 'nope'"):
        harden_bundle(zb.root, "nope")


def test_unlabeled_preprocessing_drops_the_label_and_keeps_the_patch_size():
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        RandCropByPosNegLabeld,
        RandGaussianNoised,
        ScaleIntensityd,
        ScaleIntensityRanged,
        Spacingd,
    )

    train = Compose(
        [
            EnsureChannelFirstd(keys=["image", "label"], channel_dim="no_channel"),
            Spacingd(keys=["image", "label"], pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=-57, a_max=164, b_min=0, b_max=1, clip=True),
            RandCropByPosNegLabeld(
                keys=["image", "label"], label_key="label", spatial_size=(8, 8, 8), num_samples=3
            ),
        ]
    )
    free = unlabeled_preprocessing(train)
    names = [type(t).__name__ for t in free.transforms]
    assert names == [
        "EnsureChannelFirstd",
        "Spacingd",
        "ScaleIntensityRanged",
        "SpatialPadd",
        "RandSpatialCropSamplesd",
    ]
    assert free.transforms[1].allow_missing_keys and not train.transforms[1].allow_missing_keys
    out = free({"image": torch.rand(6, 12, 10) * 400 - 100})  # smaller than the patch along one axis: padded
    assert len(out) == 3 and all(o["image"].shape == (1, 8, 8, 8) for o in out)
    assert infer_value_range(train) == (0.0, 1.0)
    assert infer_value_range([ScaleIntensityd(keys="image")]) == (0.0, 1.0)
    # an intensity transform after the scaling leaves the values unbounded
    assert infer_value_range([ScaleIntensityd(keys="image"), RandGaussianNoised(keys="image")]) is None


# ---------------------------------------------------------------------------------------- OCT train_rst
def test_oct_bundle_train_rst_trains_with_the_supervised_model_as_teacher(tmp_path):
    from monai.bundle import ConfigWorkflow

    bundle = tmp_path / "oct_robust_classification"
    shutil.copytree(
        OCT, bundle, ignore=shutil.ignore_patterns("data", "runs", "eval", "quick", "*.pt", "*.ts")
    )
    files = [str(bundle / "configs" / f) for f in ("train.json", "train_rst.json", "quick.json")]

    def workflow(**override):
        w = ConfigWorkflow(
            config_file=files, workflow_type=None, logging_file=False, bundle_root=str(bundle), **override
        )
        w.initialize()
        return w

    # the teacher: a supervised model (random weights here; the demo trains it first)
    teacher_file = bundle / "quick" / "models" / "supervised" / "model.pt"
    teacher_file.parent.mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(workflow().parser.get_parsed_content("network_def").state_dict(), teacher_file)

    w = workflow(max_epochs=1, train_steps=1)
    trainer = w.parser.get_parsed_content("train#trainer")
    assert type(trainer) is RobustSelfTrainingTrainer and trainer.beta == 6.0
    assert trainer.attack.eps == pytest.approx(0.004) and trainer.attack.steps == 1
    loaded = trainer.teacher_network.state_dict()
    saved = torch.load(teacher_file, weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    w.run()
    w.finalize()
    assert trainer.state.iteration >= 1 and torch.isfinite(trainer.state.output["loss"])
    assert 0.0 < trainer.state.metrics["pseudo_label_confidence"] <= 1.0
    assert (bundle / "quick" / "models" / "rst" / "model.pt").is_file()


def test_the_trainer_is_found_by_its_class_whatever_its_id():
    config = {
        "train": {"trainer": {"_target_": "SupervisedTrainer", "max_epochs": 1}},
        "gan": {"_target_": "monai.engines.GanTrainer"},  # a trainer, but not a SupervisedTrainer
        "mine": [{"_target_": "monai_adv.engines.SemiSupervisedAdversarialTrainer"}],
        "off": {"_target_": "SupervisedTrainer", "_disabled_": True},
        "evaluator": {"_target_": "SupervisedEvaluator"},
        "broken": {"_target_": "no.such.module.Trainer"},
    }
    assert find_trainer_ids(config) == ["train#trainer", "mine#0"]
    overlay = adversarial_training_overlay("mine#0", method="rst", eps=0.02)
    assert overlay["mine#0#_target_"] == "monai_adv.bundle.harden.adversarial_trainer"
    assert overlay["mine#0#eps"] == "@harden#eps" and overlay["harden"]["eps"] == 0.02
    with pytest.raises(ValueError, match="unknown harden settings"):
        adversarial_training_overlay("trainer", epsilon=0.1)


def test_adversarial_trainer_seeds_its_attack():
    """The training attack's random state (its random start) is seeded, which MONAI's set_determinism does not
    reach: two trainers built with one seed draw alike, another seed differently."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    data = [{"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 2, 0])}]

    def draws(seed):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loss = torch.nn.CrossEntropyLoss()
        trainer = adversarial_trainer("madry", "cpu", 1, data, net, opt, loss, eps=0.1, steps=2, seed=seed)
        return trainer.attack.R.randint(0, 2**31 - 1, size=4).tolist()

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
