from __future__ import annotations

import numpy as np
import pytest

from monai_adv.data import OCT_CLASSES, SyntheticOCTGenerator, image_statistics


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
