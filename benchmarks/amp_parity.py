"""Robust accuracy in fp32 and in mixed precision, side by side, on a trained OCT classifier.

Attacks the bundle's trained network (``models/<method>/model.pt``) on its synthetic test split with
PGD-20 and APGD-CE-20 at two eps, once in full precision and once with ``amp=True`` (bf16 autocast on
CPU, channels-last), with the same seeds, and prints robust accuracy both ways, their difference,
and the time of each, measured in the same run.

Usage (after ``make demo``, or after training the supervised system)::

    python benchmarks/amp_parity.py --bundle-dir bundles/oct_robust_classification --method supervised
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_adv.apps.oct import oct_eval_transforms
from monai_adv.bundle import load_weights, oct_split_datalists
from monai_adv.transforms import APGD, PGD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-dir", default="bundles/oct_robust_classification")
    ap.add_argument("--method", default="supervised")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.004, 0.008])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attacks", nargs="+", default=["PGD-20", "APGD-CE-20"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    size = int(parser["image_size"])
    net = load_weights(
        parser.get_parsed_content("network_def", instantiate=True), root / "models" / a.method / "model.pt"
    )
    net.eval()
    data = root / "data" / f"synthetic_oct_{size}"
    test = oct_split_datalists(data, label_fraction=float(parser["label_fraction"]), seed=a.seed)["test"]
    t = oct_eval_transforms(size)
    items = [t(d) for d in test]
    x = torch.stack([d["image"].as_tensor() for d in items])
    y = torch.tensor([int(d["label"]) for d in items])
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()
    print(
        f"# {a.method}: {len(y)} test images, clean accuracy {clean:.3f}; torch {torch.__version__}, {a.threads} thread(s)"
    )
    print(
        "| attack | eps | robust acc fp32 | robust acc amp | difference (points) | time fp32 (s) | time amp (s) | fp32 / amp |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, make in (
        ("PGD-20", lambda n, e, **kw: PGD(n, e, steps=20, **kw)),
        ("APGD-CE-20", lambda n, e, **kw: APGD(n, e, steps=20, loss="ce", **kw)),
    ):
        if name not in a.attacks:
            continue
        for eps in a.eps:
            res = {}
            for tag, network, kw in (("fp32", net, {}), ("amp", net_cl, dict(amp=True, channels_last=True))):
                atk = make(network, eps, **kw).set_random_state(a.seed)
                t0 = time.process_time()
                x_adv = atk(x, y)
                dt = time.process_time() - t0
                with torch.no_grad():
                    acc = (net(x_adv).argmax(1) == y).float().mean().item()  # judged by the fp32 network
                res[tag] = (acc, dt)
            (af, tf), (aa, ta) = res["fp32"], res["amp"]
            print(
                f"| {name} | {eps:g} | {af:.3f} | {aa:.3f} | {100 * (aa - af):+.1f} | {tf:.1f} | {ta:.1f} | {tf / ta:.2f} |"
            )


if __name__ == "__main__":
    main()
