"""Old import paths keep working for one release, warn, and give the very same objects as the new ones."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest
from helpers import subprocess_env


def test_monai_adv_data_is_monai_adv_apps_oct():
    sys.modules.pop("monai_adv.data", None)
    with pytest.warns(DeprecationWarning, match="monai_adv.apps.oct"):
        old = importlib.import_module("monai_adv.data")
    new = importlib.import_module("monai_adv.apps.oct")
    assert old.SyntheticOCTGenerator is new.SyntheticOCTGenerator
    assert old.kermany_datalist is new.kermany_datalist
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai_adv.data.synthetic.generator import SyntheticOCTGenerator
        from monai_adv.data.transforms import oct_eval_transforms
    assert SyntheticOCTGenerator is new.SyntheticOCTGenerator
    assert oct_eval_transforms is new.oct_eval_transforms


def test_old_module_commands_still_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "monai_adv.data", "check", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    # the old entry point reaches the new data check, which names the missing folder
    assert "missing" in proc.stdout + proc.stderr
    assert "moved to 'python -m monai_adv.apps.oct'" in proc.stderr
