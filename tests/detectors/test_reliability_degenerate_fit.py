"""Degenerate Mahalanobis fits are refused (docs/reliability.md, part 2 item 10)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from monai_adv.detectors import MahalanobisDetector


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def test_one_sample_is_refused():
    det = MahalanobisDetector(_net())
    with pytest.raises(ValueError, match="cannot be fitted on 1 sample"):
        det.fit([(torch.rand(1, 1, 4, 4), torch.tensor([0]))])


def test_identical_features_are_refused():
    det = MahalanobisDetector(_net())
    x = torch.rand(1, 1, 4, 4).repeat(8, 1, 1, 1)  # one image repeated
    with pytest.raises(ValueError, match="no feature variance within their classes"):
        det.fit([(x, torch.zeros(8, dtype=torch.long))])


def test_fractional_float_labels_are_refused_whole_ones_accepted():
    det = MahalanobisDetector(_net())
    x = torch.rand(8, 1, 4, 4)
    with pytest.raises(ValueError, match=r"fractional or non-finite values \[0.5"):
        det.fit([(x, torch.tensor([0.5, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]))])
    det.fit([(x, torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]))])
    assert det.num_fit_samples == 8
