"""Bounded memory and time for hostile files (docs/reliability.md, part 2 items 5 and 6)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from monai_adv.apps.oct import MAX_IMAGE_PIXELS, ImageTooLargeError, LoadOCT, read_image_file


def _png_claiming(path, width, height, mode="RGB"):
    """A small PNG whose header claims ``width`` x ``height`` (its pixel data are those of a 1 x 1 image)."""
    Image.new(mode, (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    side = 8000  # 64 million pixels, 192 million values: under Pillow's own limit, over ours
    assert side * side < Image.MAX_IMAGE_PIXELS and 3 * side * side > MAX_IMAGE_PIXELS
    _png_claiming(tmp_path / "huge.png", side, side)
    with pytest.raises(ImageTooLargeError, match=r"huge.png.*8000 x 8000 pixels.*over the limit"):
        read_image_file(tmp_path / "huge.png")
    with pytest.raises(ImageTooLargeError, match="MONAI_ADV_MAX_IMAGE_PIXELS"):
        LoadOCT()(tmp_path / "huge.png")


def test_the_pixel_limit_counts_channels_and_can_be_raised(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "rgb.png")
    monkeypatch.setenv("MONAI_ADV_MAX_IMAGE_PIXELS", "1000")  # 20 x 20 x 3 = 1200 values
    with pytest.raises(ImageTooLargeError, match=r"20 x 20 pixels x 3 channel\(s\) \(1200 values\)"):
        read_image_file(tmp_path / "rgb.png")
    monkeypatch.setenv("MONAI_ADV_MAX_IMAGE_PIXELS", "1200")
    assert read_image_file(tmp_path / "rgb.png")[0].shape == (20, 20)
