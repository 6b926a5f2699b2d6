"""Outputs complete or absent (docs/reliability.md, part 2 item 4): inference's output set is built in a
fresh folder, streamed as made, and moved into place when complete; a kill at any point leaves the
complete old set or the complete new one."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

import monai_adv.io as mio
from monai_adv.bundle import MaskWriter, PredictionWriter, readable_datalist

CLASSES = ["A", "B"]


def _batches(names, k=2, hw=0):
    """One batch per name: logits favouring class ``len(name) % k`` (masks: constant maps)."""
    out = []
    for name in names:
        c = len(name) % k
        shape = (1, k, 4, 4) if hw else (1, k)
        logits = torch.zeros(shape)
        logits[:, c] = 5.0
        image = MetaTensor(torch.zeros(1, 1, 4, 4), meta={"filename_or_obj": [name], "frame": [-1]})
        out.append({"image": image, "pred": logits})
    return out


def _run(writer, names, fail_at=None, hw=0):
    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise KeyboardInterrupt("killed")  # as a kill: no handler of the writer runs after this point
        return {"pred": batch["pred"]}

    engine = Engine(step)
    writer.attach(engine)
    engine.run(_batches(names, hw=hw), max_epochs=1)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def _failures(out, names):
    readable_datalist(
        [{"image": n} for n in names], lambda it: it, failures_file=os.path.join(out, "failures.csv")
    )


@pytest.fixture(autouse=True)
def _fresh_sets(monkeypatch):
    monkeypatch.setattr(mio, "_OUTPUT_SETS", {})


def test_a_killed_classification_inference_leaves_the_old_set_and_keeps_its_work(tmp_path):
    out = str(tmp_path / "inference")
    _failures(out, ["old1.png", "old2.png"])
    _run(PredictionWriter(out, class_names=CLASSES), ["old1.png", "old2.png"])
    old = {n: Path(out, n).read_bytes() for n in ("predictions.csv", "failures.csv")}
    assert [r[0] for r in _rows(Path(out, "predictions.csv"))] == ["old1.png", "old2.png"]

    # killed after its failures list (before any prediction), then mid-way: the old set stays whole
    for fail_at in (1, 3):
        mio._OUTPUT_SETS.clear()
        _failures(out, ["new1.png", "new2.png", "new3.png"])
        with pytest.raises(KeyboardInterrupt):
            _run(
                PredictionWriter(out, class_names=CLASSES),
                ["new1.png", "new2.png", "new3.png"],
                fail_at=fail_at,
            )
        assert {n: Path(out, n).read_bytes() for n in old} == old
    partial = [p for p in Path(out).iterdir() if p.name.startswith(".partial-")]
    assert len(partial) == 1  # the killed run's work so far, streamed as made
    assert [r[0] for r in _rows(partial[0] / "predictions.csv")] == ["new1.png", "new2.png"]

    mio._OUTPUT_SETS.clear()
    _failures(out, ["new1.png"])
    _run(PredictionWriter(out, class_names=CLASSES), ["new1.png"])
    assert [r[0] for r in _rows(Path(out, "predictions.csv"))] == ["new1.png"]
    assert not any(p.name.startswith(".partial-") for p in Path(out).iterdir())


def test_masks_are_never_left_from_another_run(tmp_path):
    out = tmp_path / "inference"
    _run(MaskWriter(out, class_names=CLASSES), ["a.png", "bb.png"], hw=4)
    a_first = (out / "masks" / "a.png").read_bytes()
    before = {p.name: p.read_bytes() for p in (out / "masks").iterdir()} | {
        "csv": (out / "masks.csv").read_bytes()
    }
    mio._OUTPUT_SETS.clear()
    with pytest.raises(KeyboardInterrupt):  # another folder, killed before masks.csv
        _run(MaskWriter(out, class_names=CLASSES), ["aa.png", "cc.png"], fail_at=2, hw=4)
    after = {p.name: p.read_bytes() for p in (out / "masks").iterdir()} | {
        "csv": (out / "masks.csv").read_bytes()
    }
    assert after == before  # the old masks, the old list
    mio._OUTPUT_SETS.clear()
    _run(MaskWriter(out, class_names=CLASSES), ["a.png", "ccc.png"][::-1], hw=4)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "ccc.png"]  # no stale bb.png
    for row in _rows(out / "masks.csv"):
        mask = np.array(Image.open(out / row[2]))
        assert int(mask[0, 0]) == len(os.path.basename(row[0])) % 2  # each mask is its own image's
    assert (out / "masks" / "a.png").read_bytes() == a_first


def test_a_commit_killed_half_way_is_finished_by_the_next_run(tmp_path, monkeypatch):
    out = tmp_path / "inference"
    _run(MaskWriter(out, class_names=CLASSES), ["a.png"], hw=4)
    mio._OUTPUT_SETS.clear()
    real_replace = os.replace

    def killed_replace(src, dst):  # the kill falls in the commit, after masks/ moved, before masks.csv
        if ".partial-" in os.fspath(src) and os.fspath(dst) == str(out / "masks.csv"):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", killed_replace)
    with pytest.raises(KeyboardInterrupt):
        _run(MaskWriter(out, class_names=CLASSES), ["bb.png"], hw=4)
    monkeypatch.setattr(mio.os, "replace", real_replace)
    assert [p.name for p in (out / "masks").iterdir()] == ["bb.png"]  # half-way: new masks, old list
    # a later run in the same folder (its own pid: here, the dead writer's folder is taken as another's)
    partial = next(p for p in out.iterdir() if p.name.startswith(".partial-"))
    dead = partial.with_name(".partial-999999@" + partial.name.split("@")[1])
    partial.rename(dead)
    mio._OUTPUT_SETS.clear()
    mio.output_set(out)
    assert not dead.exists()
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["bb.png"]
    assert [r[0] for r in _rows(out / "masks.csv")] == ["bb.png"]


def test_a_full_disk_while_streaming_names_the_file(tmp_path):
    import errno
    import io

    from ignite.engine import Events

    writer = PredictionWriter(str(tmp_path / "inference"), class_names=CLASSES)

    class Full(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    def step(engine, batch):
        return {"pred": batch["pred"]}

    engine = Engine(step)
    writer.attach(engine)

    @engine.on(Events.EPOCH_STARTED)
    def _fill_the_disk(_):
        real = writer._stream
        writer._stream = Full()
        writer._stream.name = real.name
        real.close()

    with pytest.raises(OSError, match=r"No space left on device \(writing .*\.partial-.*predictions.csv\)"):
        engine.run(_batches(["a.png"]), max_epochs=1)
