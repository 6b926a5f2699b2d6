"""The synthetic OCT layer label maps: the same images, maps aligned with them at any size, the
segmentation layout on disk and its datalist."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from monai_adv.apps.oct import (
    MANIFEST_NAME,
    OCT_LAYER_CLASSES,
    SyntheticOCTGenerator,
    oct_segmentation_transforms,
    segmentation_datalist,
    write_synthetic_oct_dataset,
)
from monai_adv.apps.oct.synthetic import OCT_LAYER_DESCRIPTIONS, main
from monai_adv.apps.oct.synthetic.labels import LabelScene, layer_label_map

IDX = {c: i for i, c in enumerate(OCT_LAYER_CLASSES)}


def test_the_class_list_is_named_and_described():
    assert OCT_LAYER_CLASSES[0] == "vitreous" and OCT_LAYER_CLASSES[-1] == "padding"
    for c in ("RNFL", "GCL+IPL", "INL", "OPL", "ONL", "IS/OS", "RPE", "choroid", "SRF", "PED", "IRF"):
        assert c in OCT_LAYER_CLASSES
    assert set(OCT_LAYER_DESCRIPTIONS) == set(OCT_LAYER_CLASSES)
    assert SyntheticOCTGenerator.layer_classes == OCT_LAYER_CLASSES


@pytest.mark.parametrize("size", [64, (48, 40), None])
def test_asking_for_the_layers_leaves_the_images_and_the_stream_unchanged(size):
    kw = dict(image_size=size, seed=5, padding_prob=0.5)
    plain, labels = SyntheticOCTGenerator(**kw).generate(1, shuffle=True)
    images, labels2, layers = SyntheticOCTGenerator(**kw).generate(1, shuffle=True, return_layers=True)
    np.testing.assert_array_equal(plain, images)
    np.testing.assert_array_equal(labels, labels2)
    assert layers.shape == images.shape and layers.dtype == np.uint8
    assert layers.max() < len(OCT_LAYER_CLASSES)
    gen = SyntheticOCTGenerator(**kw)
    img, info = gen.sample("DME", 3, return_info=True)
    img2, lay, info2 = gen.sample("DME", 3, return_info=True, return_layers=True)
    np.testing.assert_array_equal(img, img2)
    assert info == info2 and lay.shape == img.shape
    img3, lay3 = gen.sample("DME", 3, return_layers=True)
    np.testing.assert_array_equal(lay3, lay)


def test_workers_give_the_same_layers():
    a = SyntheticOCTGenerator(image_size=32, seed=2).generate(2, return_layers=True, num_workers=1)
    b = SyntheticOCTGenerator(image_size=32, seed=2).generate(2, return_layers=True, num_workers=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _native(label: str, seed: int, **kw):
    gen = SyntheticOCTGenerator(image_size=None, seed=0, jpeg_quality=None, **kw)
    return gen.sample(label, seed, return_layers=True, return_info=True)


def test_the_native_map_follows_the_image_pixel_for_pixel():
    """Each class has its reflectivity in the image, and a 2-pixel shift of the map breaks it."""
    means = {c: [] for c in OCT_LAYER_CLASSES}
    rpe_hits, up, down = [], [], []
    for s in range(8):
        img, lay, _ = _native(s % 4, s, padding_prob=1.0)
        # registration padding is pure white in the image (no JPEG here), everywhere the map says so
        pad = lay == IDX["padding"]
        assert pad.any() and (img[pad] == 1.0).all()
        for c, i in IDX.items():
            if (lay == i).any():
                means[c].append(float(np.median(img[lay == i])))
        # the brightest row of each column (RPE, the most reflective layer) is labeled RPE
        sm = ndi.uniform_filter1d(img, 9, axis=1)
        sm[pad] = 0
        rows, cols = sm.argmax(0), np.arange(img.shape[1])
        rpe_hits.append(np.mean(lay[rows, cols] == IDX["RPE"]))
        up.append(np.mean(np.roll(lay, -2, axis=0)[rows, cols] == IDX["RPE"]))
        down.append(np.mean(np.roll(lay, 2, axis=0)[rows, cols] == IDX["RPE"]))
    m = {c: np.mean(v) for c, v in means.items() if v}
    assert m["RPE"] > m["RNFL"] > m["GCL+IPL"] > m["INL"] > m["ONL"] > m["vitreous"]
    assert m["OPL"] > m["INL"] and m["OPL"] > m["ONL"] and m["IS/OS"] > m["ONL"]
    assert m["IRF"] < m["INL"]  # the cysts are dark
    # (a map 2 native pixels off misses it: 0.87 and 0.37 measured)
    assert np.median(rpe_hits) > 0.97 and np.median(up) < 0.93 and np.median(down) < 0.6


def test_lesion_classes_appear_where_the_lesions_are_drawn():
    kw = dict(severity=(20.0, 1.0), subtle_prob=0.0, padding_prob=0.0)
    for s in range(3):
        _, normal, _ = _native("NORMAL", s, **kw)
        assert not np.isin(normal, [IDX["SRF"], IDX["PED"], IDX["IRF"], IDX["padding"]]).any()
        _, drusen, info = _native("DRUSEN", s, **kw)
        assert info["n_drusen"] >= 1 and (drusen == IDX["PED"]).sum() > 20
        _, dme, info = _native("DME", s, **kw)
        assert info["n_cysts"] >= 1 and (dme == IDX["IRF"]).any()
        # layers run top to bottom in every column: vitreous first, choroid last
        for lay in (normal, drusen, dme):
            assert (lay[0] == IDX["vitreous"]).all() and (lay[-1] == IDX["choroid"]).all()
            order = np.where(np.isin(lay, [IDX["IRF"], IDX["SRF"], IDX["PED"]]), 255, lay)
            for c in range(0, lay.shape[1], 37):
                col = [v for v in order[:, c] if v != 255]
                assert col == sorted(col, key=lambda v: v if v != IDX["choroid"] else 99), c


@pytest.mark.parametrize("size", [128, (96, 80), 31])
def test_a_resized_map_is_the_native_map_at_the_output_pixel_centres(size):
    gen = SyntheticOCTGenerator(image_size=size, seed=0, padding_prob=0.5)
    native = SyntheticOCTGenerator(image_size=None, seed=0, padding_prob=0.5)
    for s in range(4):
        img, lay = gen.sample(s, s, return_layers=True)
        _, lay_n = native.sample(s, s, return_layers=True)
        h, w = lay.shape
        assert img.shape == (h, w)
        zi = np.clip(np.rint((np.arange(h) + 0.5) * 496 / h - 0.5).astype(int), 0, 495)
        xi = np.clip(np.rint((np.arange(w) + 0.5) * 496 / w - 0.5).astype(int), 0, 495)
        # equal except where a boundary passes between the exact centre and the nearest native pixel
        assert np.mean(lay_n[np.ix_(zi, xi)] == lay) > 0.98


def test_label_map_of_a_hand_made_scene():
    # 8 x 8 native grid, one boundary set (all at row 3, then 4, ...), a cyst and a top wedge
    from monai_adv.apps.oct.synthetic.anatomy import LAYERS

    k = len(LAYERS) + 4
    bounds = np.tile(np.linspace(3.0, 6.0, k)[:, None], (1, 8)).astype(np.float32)
    scene = LabelScene(8, 8, bounds=bounds)
    lay = layer_label_map(scene, (8, 8))
    assert (lay[:3] == IDX["vitreous"]).all() and (lay[3] == IDX["RNFL"]).all()
    assert (lay[7] == IDX["choroid"]).all()
    scene.cysts.append((4.0, 5.0, 1.5, 0.6))
    scene.padding.append(("top", 1.5, 1.5))
    lay2 = layer_label_map(scene, (8, 8))
    assert (lay2[:2] == IDX["padding"]).all() and (lay2[2] == IDX["vitreous"]).all()
    assert lay2[5, 3:6].tolist() == [IDX["IRF"]] * 3 and lay2[5, 2] != IDX["IRF"]
    # half the size: the centres of 2 x 2 blocks (native 0.5, 2.5, ...)
    # (boundaries at 3 + 3 k / 14: 8 of them lie above 4.5, the top of the myoid zone)
    half = layer_label_map(LabelScene(8, 8, bounds=bounds), (4, 4))
    assert (half == np.array([IDX["vitreous"], IDX["vitreous"], IDX["IS/OS"], IDX["choroid"]])[:, None]).all()
    with pytest.raises(ValueError, match="no layer boundaries"):
        layer_label_map(LabelScene(8, 8), (8, 8))


def test_segmentation_layout_manifest_datalist_and_idempotence(tmp_path):
    root = tmp_path / "seg"
    splits = {"train": 2, "unlabeled": 1, "test": 1}
    kw = dict(image_size=32, seed=4, splits=splits, num_workers=1, progress=False, layers=True)
    m = write_synthetic_oct_dataset(root, **kw)
    assert m["arguments"]["layers"] is True and m["layer_classes"] == list(OCT_LAYER_CLASSES)
    train_imgs = sorted((root / "train" / "images").iterdir())
    train_labels = sorted((root / "train" / "labels").iterdir())
    assert len(train_imgs) == 8 and [p.stem for p in train_imgs] == [p.stem for p in train_labels]
    assert (
        not (root / "unlabeled" / "labels").exists()
        and len(list((root / "unlabeled" / "images").iterdir())) == 4
    )
    rec = next(f for f in m["files"] if f["split"] == "test")
    assert rec["layers"].startswith("test/labels/") and len(rec["layers_sha1"]) == 40
    # the written map is the generator's, pixel for pixel (drawn from the writer's per-image seeds)
    with Image.open(root / rec["layers"]) as im:
        lab = np.asarray(im)
    assert lab.shape == (32, 32) and lab.dtype == np.uint8 and lab.max() < len(OCT_LAYER_CLASSES)
    gen = SyntheticOCTGenerator(image_size=32, seed=None)
    si, ci, i = list(splits).index("test"), rec["label"], 0
    _, expected = gen.sample(
        ci,
        np.random.SeedSequence(4, spawn_key=(si, ci, i)),
        patient_seed=np.random.SeedSequence(4, spawn_key=(si, ci, 10_000_000)),
        return_layers=True,
    )
    np.testing.assert_array_equal(lab, expected)

    # idempotent; a damaged label map is rendered again, identically
    stamp = (root / rec["layers"]).read_bytes()
    (root / rec["layers"]).write_bytes(b"broken")
    assert write_synthetic_oct_dataset(root, **kw) == m
    assert (root / rec["layers"]).read_bytes() == stamp
    # a classification set's arguments are unchanged (no "layers" key): its cached sets stay valid
    m_cls = write_synthetic_oct_dataset(tmp_path / "cls", image_size=16, splits={"train": 1}, progress=False)
    assert "layers" not in m_cls["arguments"] and "layers" not in m_cls["files"][0]

    labeled, unlabeled = segmentation_datalist(root, "train")
    assert len(labeled) == 8 and not unlabeled
    assert all(it["label"].endswith(".png") and "labels" in it["label"] for it in labeled)
    none, unl = segmentation_datalist(root, "unlabeled")
    assert none == [] and len(unl) == 4 and all("label" not in it for it in unl)
    half, rest = segmentation_datalist(root, "train", label_fraction=0.5, seed=1)
    assert len(half) + len(rest) == 8 and 0 < len(half) < 8
    assert not {it["patient"] for it in half} & {it["patient"] for it in rest}
    assert all("label" not in it for it in rest)

    # the transforms load both, aligned and typed
    item = oct_segmentation_transforms(16)(labeled[0])
    assert item["image"].shape == (1, 16, 16) and item["label"].shape == (1, 16, 16)
    assert item["label"].dtype.is_floating_point is False and 0.0 <= float(item["image"].min())
    full = oct_segmentation_transforms(32)(labeled[0])
    with Image.open(labeled[0]["label"]) as im:
        np.testing.assert_array_equal(full["label"][0].numpy(), np.asarray(im))
    assert "label" not in oct_segmentation_transforms(16, augment=True)(unl[0])
    json.loads((root / MANIFEST_NAME).read_text())


def test_segmentation_datalist_errors(tmp_path):
    root = tmp_path / "d"
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        segmentation_datalist(root)
    (root / "train" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        segmentation_datalist(root)
    with pytest.raises(FileNotFoundError, match="images/ and"):
        segmentation_datalist(root, "test")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "images" / "a.png")
    (root / "train" / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "labels" / "b.png")
    with pytest.raises(ValueError, match="has no image of its name"):
        segmentation_datalist(root)
    (root / "train" / "labels" / "b.png").rename(root / "train" / "labels" / "a.png")
    labeled, unlabeled = segmentation_datalist(root)
    assert labeled == [{"image": str(root / "train" / "images" / "a.png"), "patient": "a",
                        "label": str(root / "train" / "labels" / "a.png")}]  # fmt: skip
    (root / "train" / "labels" / "a.tif").write_bytes(b"x")
    with pytest.raises(ValueError, match="two label maps"):
        segmentation_datalist(root)
    (root / "train" / "labels" / "a.tif").unlink()
    (root / "train" / "labels" / "a.jpeg").write_bytes(b"x")
    with pytest.raises(ValueError, match="lossy format"):
        segmentation_datalist(root)
    (root / "train" / "labels" / "a.jpeg").unlink()
    (root / "train" / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match="a.png"):
        segmentation_datalist(root, check_files=True)
    with pytest.raises(ValueError, match="label_fraction"):
        segmentation_datalist(root, label_fraction=0.0)


def test_cli_writes_the_segmentation_layout(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--n-train", "1", "--n-unlabeled", "0", "--n-test", "0", "--size", "16"]
    assert main(args + ["--layers", "--no-progress", "--workers", "1"]) == 0
    assert len(list((out / "train" / "labels").iterdir())) == 4
    assert "wrote 4 images" in capsys.readouterr().out
