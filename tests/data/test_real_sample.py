"""Checks on the real Kermany sample in ../shared/data (skipped when it is not there)."""

from __future__ import annotations

import numpy as np

from monai_adv.apps.oct import (
    image_statistics,
    kermany_datalist,
    load_octmnist_style,
    oct_eval_transforms,
    wasserstein_1d,
)


def test_real_sample_datalist(real_sample):
    labeled, unlabeled = kermany_datalist(real_sample, "test")
    assert len(labeled) == 400 and unlabeled == []
    assert np.bincount([d["label"] for d in labeled]).tolist() == [100, 100, 100, 100]
    lab, unl = kermany_datalist(real_sample, "test", label_fraction=0.2, seed=0)
    assert {d["patient"] for d in lab}.isdisjoint({d["patient"] for d in unl})
    assert 60 <= len(lab) <= 110


def test_real_sample_loads_and_matches_reference_numbers(real_sample):
    labeled, _ = kermany_datalist(real_sample, "test")
    tf = oct_eval_transforms(128)
    for item in labeled[::50]:
        out = tf(item)
        assert out["image"].shape == (1, 128, 128)
        assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    # the reference figures in the shared OCT notes: mean 0.19, std 0.21 at 128 px
    x = np.stack([load_octmnist_style(d["image"]) for d in labeled[::4]])
    st = image_statistics(x)
    assert abs(st["mean"] - 0.19) < 0.03 and abs(st["std"] - 0.21) < 0.03
    assert wasserstein_1d(x[::2], x[1::2]) < 0.02
