"""The robust evaluators on any MONAI model: robust metrics in engine.state.metrics, softmax or multi-label
sigmoid outputs, label-free evaluation, voxel spacing from the MetaTensor, the per-image worst case,
tuple outputs and sliding-window inference; closed forms on hand-made logits and masks, and end-to-end
runs on tiny 2D and 3D networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.data import DataLoader, Dataset, MetaTensor, list_data_collate
from monai.handlers import MetricsSaver, from_engine
from monai.inferers import SlidingWindowInferer
from monai.metrics.utils import do_metric_reduction

from monai_adv.engines import RobustEvaluator, RobustSegmentationEvaluator
from monai_adv.metrics import (
    ClassificationAccuracyMetric,
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
    classification_correctness,
    image_spacing,
    worst_case_per_image,
)
from monai_adv.transforms import FGSM, PGD, per_sample_bce
from monai_adv.utils import gather_output

# --------------------------------------------------------------------------------------------------
# classification: hand-made logits
# --------------------------------------------------------------------------------------------------
K = 4


class PixelLogits(nn.Module):
    """Logits are the image's first K pixels; the last two pixels are flags that the fake attacks read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :K]


class RollWhereFlagged:
    """A fake attack: rolls the logit pixels (the prediction moves to the next class) where ``flag`` is set."""

    def __init__(self, flag: int) -> None:
        self.flag = flag

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        hit = x.flatten(1)[:, K + self.flag] > 0
        rolled = x.flatten(1)[:, :K].roll(1, dims=1)
        flat = out.view(x.shape[0], -1)
        flat[hit, :K] = rolled[hit]
        return out


def _flagged_images() -> tuple[torch.Tensor, torch.Tensor]:
    """4 images (1, 1, 6): one-hot of their label, then flags (attack a hits 0, 1; attack b hits 1, 2)."""
    y = torch.tensor([0, 1, 2, 3])
    x = torch.zeros(4, 1, 1, K + 2)
    x[torch.arange(4), 0, 0, y] = 1.0
    x[[0, 1], 0, 0, K] = 1.0
    x[[1, 2], 0, 0, K + 1] = 1.0
    return x, y


@pytest.mark.parametrize("decollate", [False, True])
def test_robust_accuracy_metrics_closed_form(decollate, tmp_path):
    x, y = _flagged_images()
    batches = [{"image": x[:2], "label": y[:2]}, {"image": x[2:], "label": y[2:]}]
    ev = RobustEvaluator(
        "cpu",
        batches,
        PixelLogits(),
        attacks={"a": RollWhereFlagged(0), "b": RollWhereFlagged(1)},
        decollate=decollate,
        val_handlers=[MetricsSaver(str(tmp_path), metrics="*", metric_details=None)],
    )
    ev.run()
    m = ev.state.metrics
    assert ev.state.key_metric_name == "accuracy"
    assert m["accuracy"] == 1.0 and m["accuracy/a"] == 0.5 and m["accuracy/b"] == 0.5
    # correct under every attack: only image 3 (0 falls to a, 1 to both, 2 to b)
    assert m["accuracy/worst"] == pytest.approx(0.25)
    d = ev.state.metric_details
    assert d["accuracy/a"].reshape(-1).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert d["accuracy/worst"].reshape(-1).tolist() == [0.0, 0.0, 0.0, 1.0]
    # MONAI's MetricsSaver sees them (as StatsHandler, TensorBoard and MLflow read engine.state.metrics)
    saved = dict(line.split(",") for line in (tmp_path / "metrics.csv").read_text().splitlines())
    assert float(saved["accuracy/worst"]) == pytest.approx(0.25) and float(saved["accuracy/b"]) == 0.5


def test_user_key_metric_kept_and_clashing_names_refused():
    x, y = _flagged_images()
    batches = [{"image": x, "label": y}]
    attacks = {"a": RollWhereFlagged(0), "b": RollWhereFlagged(1)}
    # the OCT bundle's evaluate.json names its own key metric clean_accuracy
    ev = RobustEvaluator(
        "cpu",
        batches,
        PixelLogits(),
        attacks=attacks,
        decollate=False,
        key_val_metric={"clean_accuracy": Accuracy(output_transform=from_engine(["pred", "label"]))},
    )
    ev.run()
    assert ev.state.key_metric_name == "clean_accuracy"
    assert ev.state.metrics["clean_accuracy"] == ev.state.metrics["accuracy"] == 1.0
    assert ev.state.metrics["accuracy/worst"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"\['accuracy/a'\] are the evaluator's own"):
        RobustEvaluator(
            "cpu", batches, PixelLogits(), attacks=attacks, additional_metrics={"accuracy/a": Accuracy()}
        )
    # one attack: no worst case; an attack named "worst" gives the name to its own accuracy
    one = RobustEvaluator("cpu", batches, PixelLogits(), attacks={"a": attacks["a"]}, decollate=False)
    one.run()
    assert "accuracy/worst" not in one.state.metrics and not one.worst_case
    named = RobustEvaluator(
        "cpu", batches, PixelLogits(), attacks={"a": attacks["a"], "worst": attacks["b"]}, decollate=False
    )
    named.run()
    assert named.state.metrics["accuracy/worst"] == 0.5  # attack b's accuracy, not the per-image worst


def test_sigmoid_accuracy_closed_form():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # image 0: labels 0 and 1 right, 2 wrong -> 2/3; image 1: all right
    torch.testing.assert_close(
        classification_correctness(logits, labels, "sigmoid"), torch.tensor([2 / 3, 1.0])
    )
    metric = ClassificationAccuracyMetric("sigmoid")
    metric(logits, labels)
    assert float(metric.aggregate()) == pytest.approx((2 / 3 + 1) / 2)
    # softmax: argmax against indices or one-hot
    torch.testing.assert_close(
        classification_correctness(logits, torch.tensor([0, 1])), torch.tensor([1.0, 0.0])
    )
    torch.testing.assert_close(
        classification_correctness(logits, torch.eye(3)[[0, 2]]), torch.tensor([1.0, 1.0])
    )
    with pytest.raises(ValueError, match="multi-hot"):
        classification_correctness(logits, torch.tensor([0, 1]), "sigmoid")


def test_sigmoid_classifier_end_to_end_with_bce_attacks():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        labels = (net(x) > 0).float()  # multi-hot labels the clean network gets right
    attacks = {"fgsm": FGSM(net, 0.3, loss="bce"), "pgd": PGD(net, 0.3, steps=5, loss=per_sample_bce)}
    ev = RobustEvaluator(
        "cpu", [{"image": x, "label": labels}], net, attacks=attacks, activation="sigmoid", decollate=False
    )
    ev.run()
    m, out = ev.state.metrics, ev.state.output
    assert m["accuracy"] == 1.0
    for name in attacks:
        expected = ((out[f"pred/{name}"] > 0).float() == labels).float().mean()
        assert m[f"accuracy/{name}"] == pytest.approx(float(expected))
    assert m["accuracy/pgd"] < 1.0
    assert m["accuracy/worst"] <= min(m["accuracy/fgsm"], m["accuracy/pgd"]) + 1e-9
    with pytest.raises(ValueError, match="uses a softmax loss but activation='sigmoid'"):
        RobustEvaluator("cpu", [], net, attacks={"pgd": PGD(net, 0.1)}, activation="sigmoid")
    with pytest.raises(ValueError, match="activation must be one of"):
        RobustEvaluator("cpu", [], net, activation="relu")


@pytest.mark.parametrize("decollate", [False, True])
def test_label_free_classification_measures_stability(decollate):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(4, 1, 8, 8)
    batches = [{"image": x[:2]}, {"image": x[2:]}]  # no labels
    attacks = {"fgsm": FGSM(net, 0.05), "pgd": PGD(net, 0.05, steps=3)}
    preds: dict[str, list] = {"label": [], "pred": [], "pred/pgd": []}

    def keep(engine):
        for key in preds:
            preds[key].append(gather_output(engine.state.output, key))

    ev = RobustEvaluator("cpu", batches, net, attacks=attacks, label_free=True, decollate=decollate)
    ev.add_event_handler(Events.ITERATION_COMPLETED, keep)
    assert ev.label_free
    ev.run()
    label, pred, adv = (torch.cat(preds[k]) for k in ("label", "pred", "pred/pgd"))
    assert label.shape == (4,) and torch.equal(label, pred.argmax(1))
    m = ev.state.metrics
    assert m["accuracy"] == 1.0
    assert m["accuracy/pgd"] == pytest.approx(float((adv.argmax(1) == label).float().mean()))
    assert m["accuracy/pgd"] < 1.0  # eps large enough to flip some predictions of this linear model
    with pytest.raises(ValueError, match="needs labels.*label_free=True"):
        RobustEvaluator("cpu", batches, net, attacks=attacks, decollate=decollate).run()


def test_unlabeled_batches_without_attacks_give_nan_accuracy():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    ev = RobustEvaluator("cpu", [{"image": torch.rand(2, 1, 8, 8)}], net, decollate=False)
    ev.run()
    assert math.isnan(ev.state.metrics["accuracy"])


# --------------------------------------------------------------------------------------------------
# segmentation: hand-made masks
# --------------------------------------------------------------------------------------------------
def _square(size: int, lo: int, hi: int, dims: int = 2) -> torch.Tensor:
    m = torch.zeros((size,) * dims)
    m[(slice(lo, hi),) * dims] = 1.0
    return m


def test_sigmoid_masks_closed_form():
    # two overlapping channels: channel 0 predicted as a 4x4 square, labelled as the same square moved by 2
    # rows (overlap 2x4 = 8: Dice 2*8/(16+16) = 0.5); channel 1 exact
    pred0, label0 = _square(12, 2, 6), _square(12, 2, 6).roll(2, dims=0)
    both = _square(12, 1, 9)
    logits = torch.stack([pred0 * 2 - 1, both * 2 - 1])[None] * 5.0
    label = torch.stack([label0, both])[None]
    y_pred, y = SegmentationOutputTransform(2, activation="sigmoid")({"pred": logits, "label": label})
    dice = SegmentationDiceMetric()(y_pred, y)
    torch.testing.assert_close(dice, torch.tensor([[0.5, 1.0]]))
    hd = SegmentationHausdorffMetric(percentile=None)(y_pred, y)
    torch.testing.assert_close(hd, torch.tensor([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="multi-label map"):
        SegmentationOutputTransform(2, activation="sigmoid")({"pred": logits, "label": label[:, :1]})


def test_worst_case_per_image_closed_form():
    a = torch.tensor([[0.9, 0.5], [0.2, float("nan")], [float("nan"), float("nan")]])
    b = torch.tensor([[0.6, 0.6], [0.3, 0.0], [float("nan"), float("nan")]])
    selected, choice = worst_case_per_image([a, b], "min")
    # image 0: means 0.7 / 0.6 -> b; image 1: 0.2 / 0.15 -> b; image 2: no value anywhere -> the first
    assert choice.tolist() == [1, 1, 0]
    torch.testing.assert_close(selected[:2], b[:2])
    _, choice_max = worst_case_per_image([a, b], "max")
    assert choice_max.tolist() == [0, 0, 0]


class Thresholder(nn.Module):
    """Dense logits from the image intensity: three nested sigmoid regions (``x > 0.2``, ``0.5``, ``0.8``), or,
    with ``sigmoid=False``, three softmax classes as intensity bands (below 1/3, up to 2/3, above)."""

    def __init__(self, dims: int, sigmoid: bool = True) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(1, 3, 1)
        with torch.no_grad():
            if sigmoid:
                self.conv.weight.fill_(10.0)
                self.conv.bias.copy_(torch.tensor([-2.0, -5.0, -8.0]))
            else:
                self.conv.weight.copy_(torch.tensor([0.0, 10.0, 20.0]).reshape(3, 1, *(1,) * dims))
                self.conv.bias.copy_(torch.tensor([0.0, -10.0 / 3, -10.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _seg_batches(dims: int, n: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, *(size,) * dims, generator=g)
    return x


@pytest.mark.parametrize("dims", [2, 3])
def test_sigmoid_segmentation_end_to_end_bce_attack_lowers_dice(dims):
    net = Thresholder(dims).eval()
    x = _seg_batches(dims)
    with torch.no_grad():
        label = (net(x) > 0).float()  # three nested (overlapping) regions, right on clean inputs
    attacks = {
        "fgsm": FGSM(net, 0.05, loss="bce", spatial_dims=dims),
        "pgd": PGD(net, 0.05, steps=3, loss="bce", spatial_dims=dims),
    }
    ev = RobustSegmentationEvaluator(
        "cpu",
        [{"image": x, "label": label}],
        net,
        3,
        attacks=attacks,
        activation="sigmoid",
        include_background=False,
        decollate=False,
    )
    ev.run()
    m, d = ev.state.metrics, ev.state.metric_details
    assert m["dice"] == pytest.approx(1.0) and m["hd95"] == pytest.approx(0.0)
    assert d["dice"].shape == (2, 3)  # every channel counts: no background channel with sigmoid
    assert m["dice/pgd"] < 0.99 and m["hd95/pgd"] > 0
    # the worst case: per image, the attack with the lowest mean Dice
    per_image = torch.stack([d["dice/fgsm"].nanmean(1), d["dice/pgd"].nanmean(1)])
    rows = torch.stack([d["dice/fgsm"], d["dice/pgd"]])[per_image.argmin(0), torch.arange(2)]
    torch.testing.assert_close(d["dice/worst"], rows.float())
    assert m["dice/worst"] == pytest.approx(float(do_metric_reduction(rows.float(), "mean")[0].squeeze()))
    assert m["dice/worst"] <= min(m["dice/fgsm"], m["dice/pgd"]) + 1e-6
    assert m["hd95/worst"] >= max(m["hd95/fgsm"], m["hd95/pgd"]) - 1e-6
    results = ev.per_class_results()
    assert set(results) == {"clean", "fgsm", "pgd", "worst"}
    assert (
        results["worst"]["mean_dice"] == pytest.approx(m["dice/worst"]) and len(results["worst"]["dice"]) == 3
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_label_free_segmentation(dims):
    net = Thresholder(dims, sigmoid=False)
    x = _seg_batches(dims, seed=3)
    attacks = {"fgsm": FGSM(net, 0.1, spatial_dims=dims), "pgd": PGD(net, 0.1, steps=2, spatial_dims=dims)}
    ev = RobustSegmentationEvaluator(
        "cpu", [{"image": x}], net, 3, attacks=attacks, label_free=True, hausdorff=False, decollate=False
    )
    ev.run()
    out, m = ev.state.output, ev.state.metrics
    assert out["label"].shape == (2, 1, *(16,) * dims)
    assert torch.equal(out["label"], out["pred"].argmax(1, keepdim=True))
    assert m["dice"] == pytest.approx(1.0)
    assert m["dice/pgd"] < 1.0 and "dice/worst" in m


# --------------------------------------------------------------------------------------------------
# voxel spacing from the metadata
# --------------------------------------------------------------------------------------------------
class MaskLogits(nn.Module):
    """Two-class logits whose argmax is the image's mask (``x > 0.5``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 10


def _mask_pair_items(spacings, flip=True):
    """The same image/label pair (a cube and the cube moved by 3 voxels along the first axis), per spacing."""
    img = _square(16, 4, 9, 3)[None]
    label = img.roll(3, dims=1)
    items = []
    for s in spacings:
        if s is None:
            items.append({"image": img.clone(), "label": label.clone()})
            continue
        # a flipped axis (LPS, as ITK reads DICOM) keeps the spacing but is not the identity
        affine = torch.diag(torch.tensor([-s if flip else s, s, s, 1.0], dtype=torch.float64))
        items.append(
            {
                "image": MetaTensor(img.clone(), affine=affine),
                "label": MetaTensor(label.clone(), affine=affine),
            }
        )
    return items


@pytest.mark.parametrize("decollate", [False, True])
def test_hd95_spacing_read_from_the_metatensor(decollate):
    loader = DataLoader(Dataset(_mask_pair_items([1.0, 2.0])), batch_size=2, collate_fn=list_data_collate)
    ev = RobustSegmentationEvaluator(
        "cpu", loader, MaskLogits(), 2, hausdorff_percentile=None, decollate=decollate
    )
    assert ev.spacing == "auto" and ev.distance_units is None
    ev.run()
    hd = ev.state.metric_details["hd"]  # (image, class)
    # the surfaces are 3 voxels apart along the moved axis: 3 mm at spacing 1, 6 mm at spacing 2
    torch.testing.assert_close(hd[:, 1], torch.tensor([3.0, 6.0], dtype=hd.dtype))
    torch.testing.assert_close(hd[1], 2 * hd[0])
    assert ev.distance_units == "mm"
    # no metadata: voxels; an explicit spacing wins over the metadata
    plain = RobustSegmentationEvaluator(
        "cpu",
        [list_data_collate(_mask_pair_items([None]))],
        MaskLogits(),
        2,
        hausdorff_percentile=None,
        decollate=False,
    )
    plain.run()
    assert plain.distance_units == "voxels" and plain.state.metric_details["hd"][0, 1] == pytest.approx(3.0)
    fixed = RobustSegmentationEvaluator(
        "cpu", loader, MaskLogits(), 2, hausdorff_percentile=None, spacing=0.5, decollate=False
    )
    fixed.run()
    assert fixed.distance_units == "mm"
    torch.testing.assert_close(
        fixed.state.metric_details["hd"][:, 1], torch.tensor([1.5, 1.5], dtype=hd.dtype)
    )


def test_image_spacing_reads_affine_then_pixdim():
    batch = list_data_collate(_mask_pair_items([1.0, 2.5]))["image"]
    torch.testing.assert_close(
        image_spacing(batch, 3), torch.tensor([[1.0] * 3, [2.5] * 3], dtype=torch.float64)
    )
    header = MetaTensor(
        torch.zeros(1, 1, 4, 4), meta={"pixdim": torch.tensor([1.0, 0.7, 0.3, 1, 1, 1, 1, 1])}
    )
    torch.testing.assert_close(image_spacing(header, 2), torch.tensor([[0.7, 0.3]], dtype=torch.float64))
    assert image_spacing(MetaTensor(torch.zeros(1, 1, 4, 4)), 2) is None  # identity affine: no geometry
    assert image_spacing(torch.zeros(1, 1, 4, 4), 2) is None


# --------------------------------------------------------------------------------------------------
# tuple outputs and sliding-window inference
# --------------------------------------------------------------------------------------------------
class DeepSupervision(nn.Module):
    """Returns ``(logits, auxiliary logits)``, as deep-supervision networks do in training."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.body = nn.Conv2d(1, 2, 3, padding=1)
        self.aux = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        z = self.body(x)
        return z, self.aux(z)


def test_tuple_output_network():
    net = DeepSupervision()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        label = net(x)[0].argmax(1, keepdim=True)
    ev = RobustSegmentationEvaluator(
        "cpu",
        [{"image": x, "label": label}],
        net,
        2,
        attacks={"pgd": PGD(net, 0.1, steps=2)},
        decollate=False,
    )
    ev.run()
    with torch.no_grad():
        torch.testing.assert_close(ev.state.output["pred"], net(x)[0])
    assert ev.state.metrics["dice"] == pytest.approx(1.0) and ev.state.metrics["dice/pgd"] < 1.0


def test_sliding_window_3d_with_attack_inferer():
    net = Thresholder(3, sigmoid=False)
    inferer = SlidingWindowInferer(roi_size=16, sw_batch_size=1)
    x = torch.rand(1, 1, 24, 24, 24)
    with torch.no_grad():
        label = inferer(x, net).argmax(1, keepdim=True)
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[2:])))
    atk = FGSM(net, 0.1, spatial_dims=3, inferer=inferer)
    ev = RobustSegmentationEvaluator(
        "cpu",
        [{"image": x, "label": label}],
        net,
        3,
        attacks={"fgsm": atk},
        inferer=inferer,
        hausdorff=False,
        decollate=False,
    )
    ev.run()
    assert set(calls) == {(16, 16, 16)}  # the network only ever sees windows, in the attack too
    assert ev.state.output["pred/fgsm"].shape == (1, 3, 24, 24, 24)
    assert ev.state.metrics["dice"] == pytest.approx(1.0) and ev.state.metrics["dice/fgsm"] < 1.0


# --------------------------------------------------------------------------------------------------
# the multi-label attack loss
# --------------------------------------------------------------------------------------------------
def test_per_sample_bce_closed_form_and_multilabel_labels():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # BCE(z, 1) = log(1 + e^-z), BCE(z, 0) = log(1 + e^z); mean over the labels
    expected = torch.tensor(
        [
            (math.log(2) + math.log(1 + math.e**2)) / 2,
            (math.log(1 + math.e**-1) + math.log(1 + math.e**-1)) / 2,
        ]
    )
    torch.testing.assert_close(per_sample_bce(logits, y), expected)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    atk = PGD(net, 0.1, steps=1, loss="bce", spatial_dims=2)
    assert atk.multilabel and atk.loss is per_sample_bce
    # success for multi-label outputs: any label flipped (untargeted)
    z = torch.tensor([[-0.5, 2.0], [-1.0, 1.0]])
    assert atk.is_adversarial(z, torch.tensor([[1.0, 1.0], [0.0, 1.0]])).tolist() == [True, False]
    x = torch.rand(2, 1, 2, 2)
    assert atk(x, torch.tensor([1.0, 0.0])).shape == x.shape  # one item's labels broadcast over the batch
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        atk(x, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="does not fit multi-hot labels"):
        atk(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="unknown attack loss"):
        PGD(net, 0.1, loss="hinge")


def test_label_free_sigmoid_labels_are_the_thresholded_prediction():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(2, 1, 8, 8)
    ev = RobustEvaluator(
        "cpu",
        [{"image": x}],
        net,
        attacks={"pgd": PGD(net, 0.2, steps=3, loss="bce")},
        activation="sigmoid",
        label_free=True,
        decollate=False,
    )
    ev.run()
    out = ev.state.output
    assert torch.equal(out["label"], (out["pred"] > 0).float())
    assert ev.state.metrics["accuracy"] == 1.0
    expected = ((out["pred/pgd"] > 0).float() == out["label"]).float().mean()
    assert ev.state.metrics["accuracy/pgd"] == pytest.approx(float(expected)) and float(expected) < 1.0
