from __future__ import annotations

import numpy as np
import pytest

from monai_adv.apps.oct import OCT_CLASSES, SyntheticOCTGenerator, image_statistics


def test_single_image_shape_range_and_determinism():
    gen = SyntheticOCTGenerator(image_size=64, seed=3)
    a = gen(0)
    assert a.shape == (64, 64) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and np.isfinite(a).all()
    b = SyntheticOCTGenerator(image_size=64, seed=3)(0)
    np.testing.assert_array_equal(a, b)
    c = SyntheticOCTGenerator(image_size=64, seed=4)(0)
    assert not np.array_equal(a, c)
    # set_random_state replays the stream
    gen.set_random_state(3)
    np.testing.assert_array_equal(gen(0), a)


def test_labels_by_name_and_bad_labels():
    gen = SyntheticOCTGenerator(image_size=32, seed=0)
    np.testing.assert_array_equal(gen.sample("dme", 7), gen.sample(1, 7))
    with pytest.raises(ValueError, match="unknown OCT class"):
        gen("GLAUCOMA")
    with pytest.raises(ValueError, match="out of range"):
        gen(4)
    with pytest.raises(TypeError):
        gen(1.5)


def test_generate_shapes_order_and_shuffle():
    gen = SyntheticOCTGenerator(image_size=(48, 40), seed=1)
    x, y = gen.generate(2)
    assert x.shape == (8, 48, 40) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    x2, y2 = SyntheticOCTGenerator(image_size=(48, 40), seed=1).generate(2, shuffle=True)
    assert sorted(y2.tolist()) == y.tolist()
    assert SyntheticOCTGenerator(image_size=16, seed=0).generate(0)[0].shape == (0, 16, 16)
    with pytest.raises(ValueError):
        gen.generate(-1)


def test_native_crop_and_info():
    gen = SyntheticOCTGenerator(image_size=None, seed=0, jpeg_quality=None, padding_prob=0.0)
    img, info = gen.sample("DRUSEN", 11, return_info=True)
    assert img.shape == (496, 496)
    assert info["class"] == "DRUSEN" and 0.0 < info["severity"] < 1.0 and info["n_drusen"] >= 1
    _, info_n = gen.sample("NORMAL", 11, return_info=True)
    assert info_n["severity"] == 0.0


def test_subtle_cases_draw_few_small_lesions():
    kw = dict(image_size=64, seed=0, jpeg_quality=None, padding_prob=0.0)
    always, never = SyntheticOCTGenerator(subtle_prob=1.0, **kw), SyntheticOCTGenerator(subtle_prob=0.0, **kw)
    for seed in range(6):
        _, d = always.sample("DRUSEN", seed, return_info=True)
        _, m = always.sample("DME", seed, return_info=True)
        _, c = always.sample("CNV", seed, return_info=True)
        for info in (d, m, c):
            assert info["subtle"] and info["severity"] == 0.0 and 0.2 <= info["lesion_scale"] <= 0.5
        assert 1 <= d["n_drusen"] <= 2 and m["n_cysts"] <= 1
        _, full = never.sample("DRUSEN", seed, return_info=True)
        assert not full["subtle"] and full["lesion_scale"] == 1.0 and full["severity"] > 0.0
        assert not always.sample("NORMAL", seed, return_info=True)[1]["subtle"]  # normal scans have no lesion
    # the default mixes both, at about its stated rate
    gen = SyntheticOCTGenerator(native_shape=(96, 96), **kw)  # a small grid: the rate is all we need
    rate = np.mean([gen.sample("DME", s, return_info=True)[1]["subtle"] for s in range(100)])
    assert 0.07 < rate < 0.25 and gen.subtle_prob == 0.15


def test_patient_seed_shares_the_eye():
    gen = SyntheticOCTGenerator(image_size=64, seed=0, padding_prob=0.0)
    a = gen.sample("CNV", 1, patient_seed=99)
    b = gen.sample("CNV", 2, patient_seed=99)
    c = gen.sample("CNV", 3, patient_seed=100)
    assert not np.array_equal(a, b)
    same = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    other = np.corrcoef(a.ravel(), c.ravel())[0, 1]
    assert same > other


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"native_shape": (32, 512)},
        {"severity": (0.0, 1.0)},
        {"jpeg_quality": 0},
        {"jpeg_quality": (90, 80)},
        {"padding_prob": 1.5},
        {"subtle_prob": -0.1},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticOCTGenerator(**kwargs)


def test_looks_like_real_oct_on_average():
    """Calibrated against the real Kermany sample (pooled mean 0.19, std 0.21, class means 0.187-0.200)."""
    x, y = SyntheticOCTGenerator(image_size=128, seed=0).generate(10)
    st = image_statistics(x, y)
    assert 0.14 < st["mean"] < 0.25
    assert 0.15 < st["std"] < 0.27
    assert st["background_mean"] < 0.2  # dark vitreous
    assert 0.05 < st["retina_fraction"] < 0.35  # a thin bright band
    # brightness does not give the class away
    assert max(st["class_mean"]) - min(st["class_mean"]) < 0.06
    assert len(OCT_CLASSES) == 4


# ------------------------------------------------------------------ the vectorised renderer (generator v3)
def test_same_seed_same_image_in_every_path():
    """The stream, explicit seeds, generate() and the writer's per-image seeds all replay exactly."""
    kw = dict(image_size=48, seed=11)
    x1, y1 = SyntheticOCTGenerator(**kw).generate(2, shuffle=True)
    x2, y2 = SyntheticOCTGenerator(**kw).generate(2, shuffle=True)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    gen = SyntheticOCTGenerator(**kw)
    for lab in range(4):
        np.testing.assert_array_equal(gen.sample(lab, 5, patient_seed=9), gen.sample(lab, 5, patient_seed=9))
    # the work arrays reused between images leave no trace: an image does not depend on what came before
    a = SyntheticOCTGenerator(image_size=None, seed=0).sample("CNV", 3)
    SyntheticOCTGenerator(image_size=(32, 20), native_shape=(128, 160), seed=0).generate(1)
    np.testing.assert_array_equal(SyntheticOCTGenerator(image_size=None, seed=0).sample("CNV", 3), a)


@pytest.mark.parametrize("native_shape", [(496, 512), (96, 80), (70, 200)])
def test_images_in_range_for_any_grid(native_shape):
    for kwargs in (
        {},
        {"jpeg_quality": None, "padding_prob": 1.0},
        {"severity": (30.0, 1.0), "subtle_prob": 0.0},
    ):
        gen = SyntheticOCTGenerator(image_size=None, native_shape=native_shape, seed=1, **kwargs)
        for lab in range(4):
            img = gen(lab)
            side = min(native_shape)
            assert img.shape == (side, side) and img.dtype == np.float32
            assert np.isfinite(img).all() and 0.0 <= img.min() and img.max() <= 1.0
            assert img.std() > 0.02  # an image, not a constant
        native, _ = gen.render_native(0, np.random.default_rng(0), np.random.default_rng(1))
        assert native.shape == tuple(native_shape) and 0.0 <= native.min() and native.max() <= 1.0


def test_class_differences_are_present():
    """Severe lesions show in the image: DME thickens the retina, drusen and CNV raise the RPE."""
    from scipy import ndimage as ndi

    gen = SyntheticOCTGenerator(
        image_size=None, seed=0, severity=(20.0, 1.0), subtle_prob=0.0, padding_prob=0.0, jpeg_quality=None
    )

    def thickness(img: np.ndarray) -> float:  # ILM (first bright row) to RPE (brightest row), 90th pct
        sm = ndi.gaussian_filter(img, 2.0)
        return float(np.percentile(sm.argmax(0) - (sm > 0.3).argmax(0), 90))

    normal = [thickness(gen.sample("NORMAL", s)) for s in range(5)]
    dme = [thickness(gen.sample("DME", s)) for s in range(5)]
    assert np.median(dme) > 1.3 * np.median(normal)
    for s in range(3):
        _, d = gen.sample("DRUSEN", s, return_info=True)
        _, m = gen.sample("DME", s, return_info=True)
        _, c = gen.sample("CNV", s, return_info=True)
        assert (
            d["n_drusen"] >= 1 and m["n_cysts"] >= 1 and c["cnv_kind"] in ("fibrovascular", "serous", "type2")
        )


def test_noise_helpers_have_the_stated_statistics():
    from monai_adv.apps.oct import synthetic as syn

    rng = np.random.default_rng(0)
    n = syn._normal(rng, (301, 257))
    assert n.dtype == np.float32 and n.shape == (301, 257)
    assert abs(n.mean()) < 0.01 and abs(n.std() - 1.0) < 0.01 and np.abs(n).max() < 6.0
    sz, sx = 1.1, 0.7
    g = syn._gaussian_field(rng, (400, 400), (sz, sx))
    assert abs(g.mean()) < 0.02 and abs(g.std() - 1.0) < 0.02
    # white noise blurred by a Gaussian of sigma has the correlation exp(-d^2 / (4 sigma^2))
    for axis, s in ((0, sz), (1, sx)):
        lag1 = np.corrcoef(np.take(g, range(399), axis).ravel(), np.take(g, range(1, 400), axis).ravel())[
            0, 1
        ]
        assert abs(lag1 - np.exp(-1.0 / (4.0 * s * s))) < 0.03
    # the noise floor's speckle: mean 1, variance 1 / looks for looks in {2, 3, 4}
    floor = np.ones((300, 1), dtype=np.float32)
    speckle = syn.SyntheticOCTGenerator._speckle(rng, np.zeros((0, 300), np.float32), floor, 300, 300)
    assert abs(speckle.mean() - 1.0) < 0.03 and 1 / 4 - 0.04 < speckle.var() < 1 / 2 + 0.04
    # the coarse-grid upsampling is exact linear interpolation
    v = rng.standard_normal((5, 6)).astype(np.float32)
    up = syn._upsample_linear(v, 3)
    assert up.shape == (12, 15)
    np.testing.assert_allclose(up[::3, ::3], v[:-1, :-1], rtol=1e-6)
    np.testing.assert_allclose(
        up[1, 2],
        (2 / 3) * ((1 / 3) * v[0, 0] + (2 / 3) * v[0, 1]) + (1 / 3) * ((1 / 3) * v[1, 0] + (2 / 3) * v[1, 1]),
        rtol=1e-5,
    )


def test_layer_steps_by_column_sums_match_the_direct_sum():
    from monai_adv.apps.oct import synthetic as syn

    rng = np.random.default_rng(0)
    bounds = np.sort(rng.uniform(-5.0, 40.0, (6, 64)), axis=0).astype(np.float32)
    top = np.maximum(np.floor(bounds[0]).astype(np.int64) - 2, 0)
    coef = rng.normal(size=(6, 64))
    (out,) = syn._ramp_sums([(bounds, coef)], top, 50)
    z = top[None, :] + np.arange(50)[:, None]
    direct = sum(coef[k] * np.clip(z - bounds[k] + 0.5, 0.0, 1.0) for k in range(6))
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_wasserstein_1d_closed_forms():
    from monai_adv.apps.oct import wasserstein_1d

    # a shift moves every unit of mass by the shift
    a = np.array([0.0, 1.0, 2.0, 5.0])
    assert wasserstein_1d(a, a + 0.3) == pytest.approx(0.3)
    # two point masses: the distance between them; identical samples: 0
    assert wasserstein_1d([0.0], [2.5]) == pytest.approx(2.5)
    assert wasserstein_1d(a, a[::-1]) == 0.0
    # unequal sizes: {0, 1} against {0}: half the mass moves by 1
    assert wasserstein_1d([0.0, 1.0], [0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-empty"):
        wasserstein_1d([], [1.0])
