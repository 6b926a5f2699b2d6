"""Detectors: closed forms, hooks, calibration, save/load round trip, bad input, detection of attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import toy_dataset, trained_cnn

from monai_adv.detectors import (
    AdversarialDetector,
    FeatureHooks,
    KNNDetector,
    MahalanobisDetector,
    ledoit_wolf_shrinkage,
    load_detector,
    shrunk_covariance,
)
from monai_adv.metrics.detection import detection_auroc
from monai_adv.transforms import PGD


class FeatureNet(nn.Module):
    """Penultimate features = the input itself: ``(B, D, 1, 1) -> flatten -> Linear``."""

    def __init__(self, d: int, k: int = 2) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.head = nn.Linear(d, k)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(self.flat(x))


def as_images(f: torch.Tensor) -> torch.Tensor:
    return f[:, :, None, None]


def two_gaussians(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cov = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    chol = torch.linalg.cholesky(cov)
    means = torch.tensor([[0.0, 0.0, 0.0], [4.0, -2.0, 1.0]])
    y = torch.arange(n) % 2
    f = means[y] + torch.randn(n, 3, generator=g) @ chol.T
    return f, y, means, cov


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------
def test_mahalanobis_matches_hand_computed_estimate():
    f, y, _, _ = two_gaussians(200)
    net = FeatureNet(3)
    det = MahalanobisDetector(net, shrinkage=None, progress=False).fit([(as_images(f), y)])
    fd, yd = f.double().numpy(), y.numpy()
    mu = np.stack([fd[yd == c].mean(0) for c in (0, 1)])
    centred = fd - mu[yd]
    prec = np.linalg.inv(centred.T @ centred / len(fd))
    q = torch.tensor([[1.0, 1.0, 1.0], [4.0, -2.5, 0.0], [-3.0, 2.0, 5.0]])
    qd = q.double().numpy()
    expected = np.min([[(v - m) @ prec @ (v - m) for m in mu] for v in qd], axis=1)
    np.testing.assert_allclose(det.score(as_images(q)).numpy(), expected, rtol=1e-4)


def test_mahalanobis_of_known_gaussian():
    """Many samples: the score approaches the true (x - mu)^T Sigma^-1 (x - mu) to the nearest mean."""
    f, y, means, cov = two_gaussians(20000, seed=1)
    det = MahalanobisDetector(FeatureNet(3), progress=False).fit([(as_images(f), y)])
    q = torch.tensor([[0.5, 0.5, 0.5], [4.0, 0.0, 1.0]])
    prec = torch.linalg.inv(cov)
    truth = torch.stack([min(((v - m) @ prec @ (v - m)) for m in means) for v in q])
    torch.testing.assert_close(det.score(as_images(q)), truth, rtol=0.05, atol=0.02)
    # a point at the class mean scores ~0; far away scores large
    assert det.score(as_images(means[1:2]))[0] < 0.01


def test_ledoit_wolf_stable_when_features_outnumber_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 64, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    a = ledoit_wolf_shrinkage(x)
    assert 0.5 < a <= 1.0  # isotropic truth, few samples: shrink a lot
    cov, _ = shrunk_covariance(x)
    eig = torch.linalg.eigvalsh(cov)
    assert eig.min() > 0.05 * eig.max()  # well conditioned, while the raw estimate is singular
    assert torch.linalg.matrix_rank(x.T @ x / 20) < 64
    # plenty of samples of a strongly anisotropic Gaussian: little shrinkage
    z = torch.randn(5000, 4, generator=g, dtype=torch.float64) * torch.tensor([10.0, 3.0, 1.0, 0.1])
    assert ledoit_wolf_shrinkage(z - z.mean(0)) < 0.01
    # the detector fits and scores finitely in that regime
    f = torch.randn(20, 64, generator=g)
    det = MahalanobisDetector(FeatureNet(64), progress=False).fit(as_images(f))
    assert torch.isfinite(det.score(as_images(torch.randn(5, 64, generator=g)))).all()


@pytest.mark.parametrize("n, d", [(20, 64), (200, 8), (5000, 4)])
def test_ledoit_wolf_matches_scikit_learn(n, d):
    """Our shrinkage intensity and covariance equal scikit-learn's ``ledoit_wolf`` on centred data."""
    covariance = pytest.importorskip("sklearn.covariance")
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3.0, d, dtype=torch.float64)
    x = x - x.mean(0)
    ref_cov, ref_a = covariance.ledoit_wolf(x.numpy(), assume_centered=True)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(ref_a, rel=1e-9, abs=1e-12)
    cov, _ = shrunk_covariance(x)
    np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-9, atol=1e-12)


def test_knn_kth_distance_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [3.0, 3.0]])  # normalised inside
    det = KNNDetector(FeatureNet(2), k=2, progress=False).fit(as_images(bank))
    q = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # q1 = (1, 0): distances 0, sqrt2, 2, sqrt2, |(1,0)-(.707,.707)| -> sorted 0, 0.765, 1.414 -> 2nd = 0.765
    d45 = float(np.sqrt(2 - 2 * np.cos(np.pi / 4)))
    # q2 = (.707, .707): nearest is (3,3)/|.| at 0, then (1,0) and (0,1) at d45
    torch.testing.assert_close(det.score(as_images(q)), torch.tensor([d45, d45]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="at least 11"):
        KNNDetector(FeatureNet(2), k=10, progress=False).fit(as_images(bank))


@pytest.mark.parametrize("cls", [MahalanobisDetector, KNNDetector])
def test_auroc_separable_vs_identical(cls):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(400, 8, generator=g) + torch.tensor([3.0] + [0.0] * 7)
    det = cls(FeatureNet(8), progress=False).fit(as_images(base[:200]))
    clean = det.score(as_images(base[200:300]))
    same = det.score(as_images(base[300:]))
    # far in direction too (the kNN detector normalises features)
    far = det.score(as_images(torch.randn(100, 8, generator=g) * 0.3 + torch.tensor([-6.0] + [0.0] * 7)))
    assert detection_auroc(clean, far) == 1.0
    assert abs(detection_auroc(clean, same) - 0.5) < 0.12


# ---------------------------------------------------------------------------------------------
# hooks, labels, layers, calibration
# ---------------------------------------------------------------------------------------------
def test_features_come_from_the_prediction_pass():
    f = torch.randn(50, 4)
    net = FeatureNet(4, k=3)
    det = KNNDetector(net, k=3, progress=False).fit(as_images(f))
    net.calls = 0
    logits, scores = det.predict_and_score(as_images(f[:7]))
    assert net.calls == 1 and scores.shape == (7,)
    torch.testing.assert_close(logits, net(as_images(f[:7])))
    # no hook is left behind on the network
    assert not net.head._forward_pre_hooks and not net.head._forward_hooks


def test_hooks_context_and_batch_check():
    net, x, _ = trained_cnn(2, 16, 0)
    with FeatureHooks(net, ["features.2", "penultimate"]) as hooks:
        net(x[:5])
        feats = hooks.collect(5)
        with pytest.raises(RuntimeError, match="expected 3"):
            hooks.collect(3)
    assert [t.shape for t in feats] == [(5, 16), (5, 32)]
    assert not hooks.registered


def test_labels_optional_predictions_stand_in():
    net, x, y = trained_cnn(2, 16, 0)
    with_labels = MahalanobisDetector(net, progress=False).fit([{"image": x, "label": y}])
    no_labels = MahalanobisDetector(net, progress=False).fit([{"image": x}])
    pred = net(x).argmax(1)
    forced = MahalanobisDetector(net, progress=False).fit([{"image": x, "label": pred}])
    torch.testing.assert_close(no_labels.score(x), forced.score(x))
    assert with_labels.num_classes == 4


def test_calibration_hits_target_fpr_and_detects_pgd():
    net, x, y = trained_cnn(2, 16, 0)
    fit_x, fit_y = toy_dataset(256, 16, 2, seed=11)
    val_x, _ = toy_dataset(200, 16, 2, seed=12)
    for det in (
        MahalanobisDetector(net, progress=False),
        KNNDetector(net, layers=["features.2", "penultimate"], progress=False),
    ):
        det.fit([(fit_x[i : i + 64], fit_y[i : i + 64]) for i in range(0, 256, 64)])
        thr = det.calibrate([val_x[:100], val_x[100:]], fpr=0.05)
        assert (det.score(val_x) > thr).float().mean() <= 0.05
        assert det.detect(x).float().mean() < 0.15  # held-out clean data
        x_adv = PGD(net, eps=8 / 255, steps=10)(x, y)
        assert detection_auroc(det.score(x), det.score(x_adv)) > 0.9
        assert det.detect(x_adv).float().mean() > 0.6


def test_score_is_differentiable():
    net, x, _ = trained_cnn(2, 16, 0)
    det = MahalanobisDetector(net, progress=False).fit(x)
    xg = x[:4].clone().requires_grad_(True)
    with torch.no_grad():  # gradients work even under no_grad when asked for
        _, s = det.predict_and_score(xg, grad=True)
    (g,) = torch.autograd.grad(s.sum(), xg)
    assert g.abs().sum() > 0 and all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MahalanobisDetector, KNNDetector])
def test_save_load_round_trip_weights_only(cls, tmp_path):
    net, x, _ = trained_cnn(2, 16, 0)
    det = cls(net, layers=["features.5", "penultimate"], progress=False).fit(x[:96])
    det.calibrate(x[96:], fpr=0.1)
    path = tmp_path / "sub" / "det.pt"
    det.save(path)
    state = torch.load(path, weights_only=True)
    assert state["class"] == cls.__name__ and state["layers"] == ["features.5", "penultimate"]
    for loaded in (cls.load(path, net), load_detector(path, net)):
        assert type(loaded) is cls and loaded.threshold == det.threshold and loaded.fpr == 0.1
        torch.testing.assert_close(loaded.score(x), det.score(x), rtol=0, atol=0)
        assert torch.equal(loaded.detect(x), det.detect(x))
    other = KNNDetector if cls is MahalanobisDetector else MahalanobisDetector
    with pytest.raises(ValueError, match="not a"):
        other.load(path, net)
    assert not [p for p in path.parent.iterdir() if p.name != "det.pt"]  # no temporary files left


def test_load_bad_files(tmp_path):
    net, _, _ = trained_cnn(2, 16, 0)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt"):
        MahalanobisDetector.load(bad, net)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a monai_adv detector"):
        load_detector(foreign, net)
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.pt", net)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_errors():
    net, x, _ = trained_cnn(2, 16, 0)
    with pytest.raises(ValueError, match="does not exist"):
        MahalanobisDetector(net, layers=["features.99"])
    with pytest.raises(ValueError, match="no nn.Linear"):
        MahalanobisDetector(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(TypeError, match="nn.Module"):
        KNNDetector(lambda t: t)
    with pytest.raises(ValueError, match="shrinkage"):
        MahalanobisDetector(net, shrinkage=1.5)
    with pytest.raises(ValueError, match="k must be"):
        KNNDetector(net, k=0)
    det = MahalanobisDetector(net, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        det.score(x)
    with pytest.raises(RuntimeError, match="not fitted"):
        det.save("unused.pt")
    with pytest.raises(ValueError, match="empty"):
        det.fit([])
    det.fit(x)
    with pytest.raises(RuntimeError, match="not calibrated"):
        det.detect(x)
    with pytest.raises(ValueError, match="fpr"):
        det.calibrate(x, fpr=0.0)
    nan_x = x[:2].clone()
    nan_x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        det.score(nan_x)
    with pytest.raises(ValueError, match="shape"):
        det.score(x[0, 0])
    with pytest.raises(ValueError, match="labels must lie"):
        MahalanobisDetector(net, progress=False).fit([(x, torch.full((len(x),), 7))])


def test_nan_features_are_reported():
    class NaNNet(FeatureNet):
        def forward(self, x):
            return self.head(torch.log(self.flat(x) - 1.0))  # NaN features for inputs below 1

    with pytest.raises(ValueError, match="features of layer 'penultimate'.*NaN"):
        KNNDetector(NaNNet(3), progress=False).fit(as_images(torch.rand(30, 3)))


def test_base_class_is_abstract():
    net, x, _ = trained_cnn(2, 16, 0)
    with pytest.raises(NotImplementedError):
        AdversarialDetector(net, progress=False).fit(x)


@pytest.mark.parametrize("cls", [MahalanobisDetector, KNNDetector])
def test_3d_volumes_and_conv_layers(cls, tmp_path):
    from helpers import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN(spatial_dims=3).eval()
    vols = torch.rand(24, 1, 8, 8, 8)
    det = cls(net, layers=["features.2", "penultimate"], progress=False).fit([vols[:12], vols[12:]])
    det.calibrate(torch.rand(10, 1, 8, 8, 8), fpr=0.2)
    s = det.score(torch.rand(3, 1, 8, 8, 8))
    assert s.shape == (3,) and torch.isfinite(s).all()
    det.save(tmp_path / "d3.pt")
    torch.testing.assert_close(load_detector(tmp_path / "d3.pt", net).score(vols[:3]), det.score(vols[:3]))


def test_scoring_restores_each_module_mode():
    net, x, _ = trained_cnn(2, 16, 0)
    det = MahalanobisDetector(net, progress=False).fit(x)
    net.train()
    net.features[1].eval()  # a frozen batch norm inside a network in training mode
    try:
        det.score(x[:4])
        assert net.training and net.head.training and not net.features[1].training
    finally:
        net.eval()


# ---------------------------------------------------------------------------------------------
# a detector knows the network it was fitted on
# ---------------------------------------------------------------------------------------------
def test_a_detector_refuses_another_network_naming_both(tmp_path):
    from monai_adv.detectors import NetworkMismatchError, network_fingerprint

    net, x, _ = trained_cnn(2, 16, 0)
    det = MahalanobisDetector(net, progress=False).fit(x[:96])
    det.calibrate(x[96:], fpr=0.1)
    path = tmp_path / "detector.pt"
    det.save(path)
    fitted = network_fingerprint(net)
    assert torch.load(path, weights_only=True)["network_fingerprint"] == fitted == det.network_fingerprint
    assert load_detector(path, net).network_fingerprint == fitted  # the same network loads
    # the same architecture with other weights (another run, the model trained again): refused
    retrained, _, _ = trained_cnn(2, 16, 1)
    other = network_fingerprint(retrained)
    assert other != fitted
    with pytest.raises(
        NetworkMismatchError,
        match=rf"detector\.pt.*fitted on network {fitted[:16]} but is given network {other[:16]}",
    ):
        load_detector(path, retrained)
    # one weight changed by a tiny amount is another network too
    with torch.no_grad():
        nudged = trained_cnn(2, 16, 0)[0]
        next(nudged.parameters()).view(-1)[0] += 1e-6
    with pytest.raises(NetworkMismatchError):
        MahalanobisDetector.load(path, nudged)
    # a network of another architecture with the same layer names and shapes of the features: refused
    assert network_fingerprint(nn.Sequential(nn.Linear(2, 2))) != network_fingerprint(
        nn.Sequential(nn.Linear(2, 3))
    )
    # the check can be skipped explicitly, and an in-memory detector checks on request
    assert load_detector(path, retrained, check_network=False).network_fingerprint == fitted
    with pytest.raises(NetworkMismatchError):
        det.check_network(retrained)
