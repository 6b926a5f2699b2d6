"""Probe (ad hoc, kept because experiments/ssat_collapse/README.md quotes it): eval-mode validation accuracy during the first
SSAT fine-tuning steps (the paper's loss, SGD momentum 0.9), per iteration.

    python experiments/ssat_collapse/probes/first_steps.py tiny - <bundle>          # lr 4e-5: val 0.90 -> 0.665 after 4 steps
    python experiments/ssat_collapse/probes/first_steps.py zero - <bundle>          # lr 0: batch-norm statistics alone, no drop
"""

# ruff: noqa
import sys
import torch, torch.nn as nn, copy
from monai.data import CacheDataset, DataLoader
from monai.networks.nets import resnet10
from monai.utils import set_determinism
from ignite.engine import Events
from monai_adv.bundle import oct_split_datalists
from monai_adv.apps.oct import oct_train_transforms, oct_eval_transforms
from monai_adv.engines import create_trainer

torch.set_num_threads(1)
set_determinism(0)
bundle = sys.argv[3] if len(sys.argv) > 3 else "bundles/oct_robust_classification"
root = bundle + "/data/synthetic_oct_64"
dl = oct_split_datalists(root, label_fraction=0.25, seed=0, val_fraction=0.1)
tr = CacheDataset(dl["labeled"], oct_train_transforms(64), progress=False)
un = CacheDataset(dl["unlabeled"], oct_train_transforms(64, label_key=None), progress=False)
va = CacheDataset(dl["val"], oct_eval_transforms(64), progress=False)
XV = torch.stack([d["image"].as_tensor() for d in va])
YV = torch.tensor([int(d["label"]) for d in va])
mode = sys.argv[1]
net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25)
net.load_state_dict(torch.load(bundle + "/models/supervised/model.pt"))
net = net.to(memory_format=torch.channels_last)
w0 = [p.detach().clone() for p in net.parameters()]
opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
if mode == "tiny":
    for g in opt.param_groups:
        g["lr"] = 4e-5
if mode == "zero":
    for g in opt.param_groups:
        g["lr"] = 0.0
t = create_trainer(
    "ssat",
    "cpu",
    1,
    DataLoader(tr, batch_size=32, shuffle=True),
    net,
    opt,
    unlabeled_data_loader=DataLoader(un, batch_size=32, shuffle=True),
    decollate=False,
    amp=True,
)
t.attack.set_random_state(0)


def log(e):
    net.eval()
    with torch.no_grad():
        acc = (net(XV).argmax(1) == YV).float().mean().item()
    dw = sum((p.detach() - q).norm() ** 2 for p, q in zip(net.parameters(), w0)) ** 0.5
    o = e.state.output
    if e.state.iteration % 3 == 1:
        print(
            e.state.iteration,
            "val(eval mode)",
            round(acc, 3),
            "dw",
            round(float(dw), 4),
            "hist",
            o["pseudo_label_histogram"].tolist(),
            "Ll",
            round(o["loss_labeled"], 3),
            "Lu",
            round(o["loss_unlabeled"], 3),
            flush=True,
        )


t.add_event_handler(Events.ITERATION_COMPLETED, log)
t.state.max_epochs = 1
t.run()
