"""'#' in paths refused, I/O errors name their path, writability checked before work (docs/reliability.md,
part 2 items 9 and 11)."""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

import monai_adv.io as mio
from monai_adv.bundle.components import check_config_paths, fit_detector
from monai_adv.bundle.data import prepare_oct_dataset
from monai_adv.bundle.errors import BundleInputError

ROOT = Path(__file__).resolve().parents[2]


def test_a_hash_in_work_root_or_dataset_dir_is_refused_before_any_work(tmp_path):
    for bundle in ("oct_robust_classification", "oct_layer_segmentation"):
        for cfg, key in (("train", "work_root"), ("train", "dataset_dir"), ("inference", "work_root")):
            parser = ConfigParser()
            parser.read_config(str(ROOT / "bundles" / bundle / "configs" / f"{cfg}.json"))
            parser["bundle_root"] = str(ROOT / "bundles" / bundle)
            parser[key] = str(tmp_path / "runs#2")  # MONAI's parser turns the '#' into '::'
            with pytest.raises(RuntimeError) as info:  # MONAI wraps the error of a config expression
                parser.get_parsed_content("initialize#0")
            cause = info.value.__cause__
            assert isinstance(cause, BundleInputError), (bundle, cfg, key)
            assert re.search(rf"{key} .*runs::2.*did you mean .*runs#2", str(cause))
    with pytest.raises(BundleInputError, match="dataset_dir"):
        prepare_oct_dataset(str(tmp_path / "a::b"))
    check_config_paths(work_root=str(tmp_path / "plain"), dataset_dir=None)  # no complaint


class _NoFit:
    fitted = False

    def fit(self, *args, **kwargs):
        self.fitted = True


def test_fit_detector_checks_its_folder_before_fitting(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the folder should be")
    det = _NoFit()
    with pytest.raises(OSError, match=r"detector folder .*models.* is not writable.*nothing was done"):
        fit_detector(det, [], [], save_path=blocker / "detector.pt")
    assert not det.fitted


def test_a_full_disk_error_names_the_file(tmp_path, monkeypatch):
    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    real = mio.os.fdopen

    def fdopen(fd, *args, **kwargs):
        mio.os.close(fd)
        return Full()

    monkeypatch.setattr(mio.os, "fdopen", fdopen)
    target = tmp_path / "predictions.csv"
    with pytest.raises(OSError, match=r"No space left on device \(writing .*predictions.csv\)") as info:
        mio.atomic_write_text(target, "a,b\n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    monkeypatch.setattr(mio.os, "fdopen", real)
    assert not any(tmp_path.iterdir())  # no temporary left
