from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: the real Kermany sample beside the repository (../shared/data/kermany-oct-sample)
REAL_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kermany-oct-sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    if not (REAL_SAMPLE / "test").is_dir():
        pytest.skip(f"real Kermany sample not found at {REAL_SAMPLE}")
    return REAL_SAMPLE


def write_jpeg(path: Path, shape=(40, 52), seed: int = 0, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def kermany_tree(tmp_path: Path) -> Path:
    """A tiny Kermany layout: 4 classes x 3 patients x 2 images in train, 1 image per class in test."""
    root = tmp_path / "kermany"
    k = 0
    for cname in ("CNV", "DME", "DRUSEN", "NORMAL"):
        for pid in range(3):
            for n in range(1, 3):
                write_jpeg(
                    root / "train" / cname / f"{cname}-{1000 + 10 * pid + len(cname)}-{n}.jpeg", seed=k
                )
                k += 1
        write_jpeg(root / "test" / cname / f"{cname}-{9000 + len(cname)}-1.jpeg", seed=k)
        k += 1
    return root
