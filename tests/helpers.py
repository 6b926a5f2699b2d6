"""Small models and data sets shared by the tests: built in seconds, deterministic."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "subprocess_env",
    "LinearClassifier",
    "SmallCNN",
    "toy_dataset",
    "trained_cnn",
    "accuracy",
    "write_oct_dicom",
    "two_region_dataset",
    "trained_segmenter",
    "mean_dice",
]


class LinearClassifier(nn.Module):
    """``logits = W x + b`` over the flattened image: the model with closed-form optimal attacks."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone() if bias is not None else torch.zeros(weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(1), self.weight, self.bias)


class SmallCNN(nn.Module):
    """A small 2D/3D CNN with batch norm and dropout (so eval mode matters)."""

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 4, width: int = 16
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1),
            bn(width),
            nn.ReLU(),
            conv(width, 2 * width, 3, padding=1, stride=2),
            bn(2 * width),
            nn.ReLU(),
            pool(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def toy_dataset(
    n: int, size: int = 16, spatial_dims: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes: a faint blob in one of four quadrants over noise, intensities in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    shape = (n, 1) + (size,) * spatial_dims
    x = 0.3 + 0.08 * torch.randn(shape, generator=g)
    coords = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * spatial_dims, indexing="ij")
    q = size / 4
    centres = [(q, q), (q, 3 * q), (3 * q, q), (3 * q, 3 * q)]
    for c in range(4):
        centre = centres[c] + (size / 2,) * (spatial_dims - 2)
        d2 = sum((coords[i] - centre[i]) ** 2 for i in range(spatial_dims))
        blob = 0.3 * torch.exp(-d2 / (2 * (size / 8) ** 2))
        x[labels == c] += blob
    return x.clamp(0, 1), labels


@functools.lru_cache(maxsize=4)
def trained_cnn(
    spatial_dims: int = 2, size: int = 16, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A SmallCNN trained to high clean accuracy on the toy set; returns (network, test x, test y)."""
    torch.manual_seed(seed)
    x, y = toy_dataset(512 if spatial_dims == 2 else 256, size, spatial_dims, seed)
    xt, yt = toy_dataset(128 if spatial_dims == 2 else 64, size, spatial_dims, seed + 1)
    net = SmallCNN(spatial_dims)
    epochs, batch = 20, 32
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    # one-cycle makes this tiny training robust to the seed and the thread count
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * -(-len(x) // batch))
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    return net, xt, yt


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def write_oct_dicom(path, frames, bits: int = 8, photometric: str = "MONOCHROME2"):
    """Write ``frames`` ((H, W) or (N, H, W), uint8 or uint16) as an ophthalmic tomography DICOM file."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OPT"
    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if frames.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def two_region_dataset(
    n: int, size: int = 16, spatial_dims: int = 2, seed: int = 0, contrast: float = 0.1, noise: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-class segmentation task: a random plane splits each image, the label-1 side is brighter.

    Per-voxel contrast equals the noise, so the network has to pool a neighbourhood to segment well.

    Returns:
        images ``(n, 1, *spatial)`` in [0, 1] and labels ``(n, 1, *spatial)`` (``torch.long``, 0 or 1).
    """
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(
        torch.meshgrid(
            *[torch.arange(size, dtype=torch.float32) - (size - 1) / 2] * spatial_dims, indexing="ij"
        )
    )  # (d, *spatial)
    normal = torch.randn(n, spatial_dims, generator=g)
    normal = normal / normal.norm(dim=1, keepdim=True)
    offset = (torch.rand(n, generator=g) - 0.5) * size / 2
    side = torch.einsum("nd,d...->n...", normal, coords) > offset.reshape(n, *([1] * spatial_dims))
    y = side.long().unsqueeze(1)
    x = 0.3 + contrast * y + noise * torch.randn(y.shape, generator=g)
    return x.clamp(0, 1), y


@functools.lru_cache(maxsize=2)
def trained_segmenter(
    spatial_dims: int = 2, size: int = 16, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MONAI UNet trained for a few seconds on :func:`two_region_dataset`; returns (network, test x, test y)."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    x, y = two_region_dataset(256, size, spatial_dims, seed)
    xt, yt = two_region_dataset(32, size, spatial_dims, seed + 1)
    net = UNet(spatial_dims, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=0, norm=None)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(300):
        idx = torch.randint(0, len(x), (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx, 0]).backward()
        opt.step()
    net.eval()
    for p in net.parameters():
        p.grad = None
    return net, xt, yt


def mean_dice(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Dice over the samples and both classes (MONAI's ``DiceMetric``) of ``net``'s argmax prediction."""
    from monai.metrics import DiceMetric

    with torch.no_grad():
        pred = net(x).argmax(1)
    k = 2
    onehot = lambda t: F.one_hot(t, k).movedim(-1, 1)  # noqa: E731
    return float(DiceMetric(include_background=True)(onehot(pred), onehot(y[:, 0])).nanmean())


def subprocess_env() -> dict[str, str]:
    """The environment of a test's ``python -m ...`` subprocess: one thread, unbuffered, this checkout importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    return env
