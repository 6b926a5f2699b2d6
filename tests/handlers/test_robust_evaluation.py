"""RobustEvaluator, the UAD handler and the robustness report, on a small trained CNN."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import toy_dataset, trained_cnn
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import StatsHandler
from torch.utils.tensorboard import SummaryWriter

from monai_adv.detectors import KNNDetector, MahalanobisDetector
from monai_adv.engines.evaluator import RobustEvaluator
from monai_adv.handlers import (
    AdversarialDetectionHandler,
    AdversarialRisk,
    RobustnessReport,
    risk_output_transform,
)
from monai_adv.metrics import compute_adversarial_risk, detection_auroc
from monai_adv.transforms import FGSM, PGD

N = 64


@pytest.fixture(scope="module")
def setup():
    net, x, y = trained_cnn(2, 16, 0)
    x, y = x[:N], y[:N]
    det = MahalanobisDetector(net, progress=False).fit(toy_dataset(256, 16, 2, seed=5))
    det.calibrate(toy_dataset(128, 16, 2, seed=7)[0], fpr=0.05)
    loader = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(N)]), batch_size=16)
    return net, x, y, det, loader


class ForwardCounter:
    def __init__(self, net):
        self.calls = 0
        self.handle = net.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def stack(output, key):
    return torch.stack([torch.as_tensor(o[key]) for o in output])


def test_robust_evaluator_output(setup):
    net, x, y, det, loader = setup
    attacks = {"fgsm": FGSM(net, eps=4 / 255), "pgd": PGD(net, eps=4 / 255, steps=3)}
    ev = RobustEvaluator("cpu", loader, net, attacks=attacks, detector=det, decollate=False)
    seen = []
    ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    ev.run()
    out = seen[0]
    xb = x[:16]
    with torch.no_grad():
        torch.testing.assert_close(out["pred"], net(xb))
    torch.testing.assert_close(out["uad_score"], det.score(xb))
    assert torch.equal(out["uad_flag"], out["uad_score"] > det.threshold)
    for name in attacks:
        x_adv = out[f"image/{name}"]
        assert (x_adv - xb).abs().max() <= 4 / 255 + 1e-6
        with torch.no_grad():
            torch.testing.assert_close(out[f"pred/{name}"], net(x_adv))
        torch.testing.assert_close(out[f"uad_score/{name}"], det.score(x_adv))
    # without attacks: exactly one forward pass per batch gives prediction and score
    counter = ForwardCounter(net)
    RobustEvaluator("cpu", loader, net, detector=det).run()
    counter.handle.remove()
    assert counter.calls == N // 16


def test_robust_evaluator_bad_input(setup):
    net, _, _, det, loader = setup
    with pytest.raises(ValueError, match="without '/'"):
        RobustEvaluator("cpu", loader, net, attacks={"a/b": FGSM(net, 0.01)})
    other, _, _ = trained_cnn(2, 16, 1)
    with pytest.raises(ValueError, match="another network"):
        RobustEvaluator("cpu", loader, other, detector=det)
    with pytest.raises(ValueError, match="not fitted"):
        RobustEvaluator("cpu", loader, net, detector=KNNDetector(net))


def test_uad_handler_on_plain_evaluator(setup):
    net, x, _, det, loader = setup
    ev = SupervisedEvaluator("cpu", loader, net)
    AdversarialDetectionHandler(det).attach(ev)
    outputs = []
    ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))
    counter = ForwardCounter(net)
    ev.run()
    counter.handle.remove()
    assert counter.calls == N // 16  # no extra forward pass for detection
    torch.testing.assert_close(stack(outputs, "uad_score"), det.score(x))
    flags = stack(outputs, "uad_flag")
    assert torch.equal(flags, det.detect(x))
    assert ev.state.metrics["uad_flag_rate"] == pytest.approx(float(flags.float().mean()))
    # the hooks are gone after the run
    assert not any(m._forward_pre_hooks for m in net.modules())


def test_uad_handler_and_risk_on_robust_evaluator(setup):
    net, x, y, det, loader = setup
    pgd = PGD(net, eps=8 / 255, steps=3)
    ev = RobustEvaluator("cpu", loader, net, attacks={"pgd": pgd}, detector=det)
    AdversarialDetectionHandler(det).attach(ev)
    AdversarialRisk(prefix="pgd_", output_transform=risk_output_transform("pgd")).attach(ev, "pgd_risk")
    outputs = []
    ev.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.extend(e.state.output))
    ev.run()
    clean, adv = stack(outputs, "uad_score"), stack(outputs, "uad_score/pgd")
    m = ev.state.metrics
    assert m["uad_auroc/pgd"] == pytest.approx(detection_auroc(clean, adv))
    assert m["uad_tpr/pgd"] == pytest.approx(float((adv > det.threshold).float().mean()))
    assert m["uad_auroc/pgd"] > 0.9
    yy = stack(outputs, "label").reshape(-1)
    expected = compute_adversarial_risk(
        (stack(outputs, "pred").argmax(1) != yy).float(),
        (stack(outputs, "pred/pgd").argmax(1) != yy).float(),
        stack(outputs, "uad_flag").float(),
        stack(outputs, "uad_flag/pgd").float(),
    )
    for k, v in expected.items():
        assert m[f"pgd_{k}"] == pytest.approx(v, nan_ok=True)
    assert m["pgd_risk_system"] < m["pgd_risk_classifier"]  # this detector pays off against PGD
    with pytest.raises(ValueError, match="give the detector"):
        AdversarialDetectionHandler(KNNDetector(net, progress=False).fit(x)).attach(ev)


def test_robustness_report(setup, tmp_path):
    net, x, y, det, loader = setup
    attacks = {
        "fgsm_2": FGSM(net, eps=2 / 255),
        "fgsm_8": FGSM(net, eps=8 / 255),
        "pgd_8": PGD(net, eps=8 / 255, steps=3),
    }
    ev = RobustEvaluator("cpu", loader, net, attacks=attacks, detector=det)
    writer = SummaryWriter(str(tmp_path / "tb"))
    report = RobustnessReport(tmp_path / "out", summary_writer=writer, title="toy")
    report.attach(ev)
    # a StatsHandler attached after the report formats every metric as a number: the report must
    # not be one of them
    StatsHandler(name="robust_eval", iteration_log=False).attach(ev)
    ev.run()
    writer.close()
    r = json.loads((tmp_path / "out" / "report.json").read_text())
    with torch.no_grad():
        clean = float((net(x).argmax(1) == y).float().mean())
    assert (r["task"], r["metric"], r["label_free"]) == ("classification", "accuracy", False)
    assert r["clean"] == pytest.approx(clean) and r["details"]["accuracy"] == pytest.approx(clean)
    assert [a["name"] for a in r["attacks"]] == list(attacks) and r["n"] == N
    a = {a["name"]: a for a in r["attacks"]}["pgd_8"]
    assert a["attack"] == "PGD" and a["eps"] == pytest.approx(8 / 255) and a["value"] == a["accuracy"]
    assert 0 <= a["accuracy"] <= r["clean"] and a["auroc"] > 0.9
    assert a["risk"]["risk_system"] < a["risk_no_detector"]["risk_classifier"]
    assert a["risk_no_detector"]["risk_system"] == pytest.approx(a["risk_no_detector"]["risk_classifier"])
    assert (
        a["risk_system"] == a["risk"]["risk_system"]
        and a["undetected_error"] == a["risk"]["undetected_error"]
    )
    # fgsm_8 and pgd_8 share eps 8/255: an image counts in the worst case only if both leave it right
    (worst,) = r["worst_case"]
    assert worst["attacks"] == ["fgsm_8", "pgd_8"] and worst["eps"] == pytest.approx(8 / 255)
    items = torch.load(tmp_path / "out" / "items.pt", weights_only=True)
    by_items = (
        ((items["pred/fgsm_8"] == items["label"]) & (items["pred/pgd_8"] == items["label"])).float().mean()
    )
    assert worst["value"] == pytest.approx(float(by_items))
    assert worst["value"] <= min(a["value"] for a in r["attacks"] if a["name"] != "fgsm_2")
    # broken in the worst case: some attack at that eps leaves the image misclassified and unflagged
    broken = torch.zeros(N, dtype=torch.bool)
    for name in ("fgsm_8", "pgd_8"):
        broken |= (items[f"pred/{name}"] != items["label"]) & ~items[f"uad_flag/{name}"].bool()
    assert worst["undetected_error"] == pytest.approx(float(broken.float().mean()))
    members = {a["name"]: a["undetected_error"] for a in r["attacks"]}
    assert worst["undetected_error"] >= max(members["fgsm_8"], members["pgd_8"]) - 1e-9
    # the headline values reach engine.state.metrics (MLflow, MetricsSaver); the report does not
    assert ev.state.metrics["accuracy/pgd_8"] == pytest.approx(a["value"])
    assert all(isinstance(v, (int, float)) for v in ev.state.metrics.values())
    md = (tmp_path / "out" / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] in attacks]
    assert "| pgd_8 | PGD |" in md and len(rows) == len(attacks)  # one row per attack (and other tables)
    assert "| 0.03137 | " in md and "fgsm_8, pgd_8 |" in md  # the worst-case table
    for png in ("accuracy_vs_eps.png", "roc.png", "risk.png", "attack_gallery.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    # report.json is written last: no file in the folder is newer
    newest = max(p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir() if p.is_file())
    assert (tmp_path / "out" / "report.json").stat().st_mtime_ns == newest
    assert list((tmp_path / "tb").iterdir())  # TensorBoard event file
    assert ev.state.robustness_report["attacks"][0]["eps"] == pytest.approx(2 / 255)
    items = torch.load(tmp_path / "out" / "items.pt", weights_only=True)
    assert items["uad_score/pgd_8"].shape == (N,) and torch.equal(items["label"].long(), y)
