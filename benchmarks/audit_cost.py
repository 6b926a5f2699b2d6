"""What a robustness audit costs: the MONAI model zoo's spleen_ct_segmentation bundle (3D UNet, sliding window
96^3) on one synthetic CT volume of 96^3 voxels, random weights, on this machine's CPU.

It copies ``../shared/model-zoo/spleen_ct_segmentation`` to a scratch folder, saves random weights, writes one
labelled CT-like volume (a +200 HU sphere in -100 HU tissue, 1.5 x 1.5 x 2 mm) as the validation set, and runs
``python -m monai_adv.bundle audit`` on ``train.json`` + ``evaluate.json`` as a user would: with ``--quick``
(the default attacks: FGSM, PGD, SegPGD, CosPGD, SEA at two eps) and with the full budget of one attack
(PGD-20 at two eps), timing each run (wall and CPU seconds). The full default budget is then the measured cost
of one forward-backward pass times the number of passes it makes, printed as a derived figure.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/audit_cost.py [--threads 2] [--out benchmarks/audit_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "model-zoo" / "spleen_ct_segmentation"


def make_bundle(scratch: Path, size: int = 96) -> Path:
    """A scratch spleen bundle with random weights and one 96^3 labelled volume, 10 training pairs listed."""
    import nibabel as nib
    import torch
    from monai.bundle import ConfigParser

    bundle = scratch / "spleen_ct_segmentation"
    shutil.copytree(ZOO, bundle)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    data = scratch / "data"
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"))
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(10):  # train.json takes the last 9 pairs for validation; the audit uses the first
        sphere = ((grid - size / 2) ** 2).sum(0) < (size / 5) ** 2
        img = (rng.normal(-100.0, 20.0, (size,) * 3) + 200.0 * sphere).astype(np.float32)
        for folder, arr in (("imagesTr", img), ("labelsTr", sphere.astype(np.uint8))):
            (data / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, affine), str(data / folder / f"spleen_{i:02d}.nii.gz"))
    return bundle


def timed_audit(bundle: Path, data: Path, out: Path, *args: str) -> dict:
    cmd = [sys.executable, "-m", "monai_adv.bundle", "audit", str(bundle)]
    cmd += ["--config", "configs/train.json", "configs/evaluate.json", "--num-images", "1"]
    cmd += ["--output-dir", str(out), "--dataset-dir", str(data), *args]
    cmd += ["--validate#dataloader#num_workers", "0", "--validate#dataset#cache_rate", "0"]
    t0 = time.time()
    r0 = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    r1 = os.times()
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    report = json.loads((out / "report.json").read_text())
    return {
        "args": list(args),
        "wall_s": round(time.time() - t0, 1),
        "cpu_s": round((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 1),
        "clean": report["clean"],
        "attacks": {a["name"]: a["value"] for a in report["attacks"]},
        "budget": report.get("budget"),
        "compute": report.get("compute"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS) of the audits")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "audit_cost.json"))
    args = ap.parse_args()
    if not ZOO.is_dir():
        raise SystemExit(f"{ZOO} not found: the benchmark needs ../shared/model-zoo beside the checkout.")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    cpu = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": platform.processor() or platform.machine(),
        "threads": args.threads,
    }
    try:
        flags = Path("/proc/cpuinfo").read_text()
        cpu["model"] = next(
            line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")
        )
        cpu["native_bf16"] = "avx512_bf16" in flags or "amx_bf16" in flags
    except (OSError, StopIteration):
        pass
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bundle = make_bundle(scratch)
        runs = {
            "quick, default attacks": ["--quick"],
            "full budget, PGD-20 only": ["--attacks", "pgd"],
        }
        for label, extra in runs.items():
            row = {
                "run": label,
                **timed_audit(bundle, scratch / "data", scratch / label.replace(" ", "_"), *extra),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    # PGD-20 at 2 eps: 2 x (20 forward-backward + 1 forward) + 1 clean forward passes; a backward ~ 2 forwards
    pgd = rows[1]
    passes = 2 * 20
    per_pass = pgd["wall_s"] / passes
    full_passes = 2 * (1 + 20 + 20 + 20 + 3 * 100)  # FGSM, PGD, SegPGD, CosPGD, SEA (3 losses x 100) at 2 eps
    derived = {
        "seconds_per_forward_backward_pass": round(per_pass, 2),
        "full_default_passes": full_passes,
        "full_default_minutes_derived": round(full_passes * per_pass / 60, 1),
    }
    print(json.dumps(derived))
    result = {"cpu": cpu, "volume": "96^3, 1 image", "rows": rows, "derived": derived}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
