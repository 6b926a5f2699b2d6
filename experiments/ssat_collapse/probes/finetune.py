"""Probe (ad hoc, kept because experiments/ssat_collapse/README.md quotes it): fine-tune SSAT from the demo's supervised model.

Produced the "SGD constant lr 1e-3" and "AdamW constant lr 1e-4" rows of experiments/ssat_collapse/README.md:

    python experiments/ssat_collapse/probes/finetune.py --recipe paper --opt sgd --sched const --lr 0.001 --epochs 10 \
        --init <bundle>/models/supervised/model.pt --root <bundle>/data/synthetic_oct_64
    python experiments/ssat_collapse/probes/finetune.py --recipe paper --opt adamw --sched const --lr 0.0001 --epochs 5 ...

(<bundle>: a bundle folder after `python -m monai_adv.bundle demo --threads 1 --methods supervised`.)
"""

# ruff: noqa
import sys, time, argparse, copy, torch, torch.nn as nn
from monai.data import CacheDataset, DataLoader
from monai.networks.nets import resnet10
from monai.utils import set_determinism
from ignite.engine import Events
from monai_adv.bundle import oct_split_datalists
from monai_adv.apps.oct import oct_train_transforms, oct_eval_transforms
from monai_adv.transforms import PGD, APGD, FGSM
from monai_adv.engines import create_trainer, SemiSupervisedAdversarialTrainer
from monai_adv.metrics import classification_summary

ap = argparse.ArgumentParser()
ap.add_argument("--recipe", default="paper")
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--eps", type=float, default=0.004)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--wu", type=float, default=1.0)
ap.add_argument("--wla", type=float, default=1.0)
ap.add_argument("--init", required=True, help="<bundle>/models/supervised/model.pt")
ap.add_argument("--root", required=True, help="<bundle>/data/synthetic_oct_64")
ap.add_argument("--opt", default="adamw")
ap.add_argument("--sched", default="onecycle")
ap.add_argument("--save", default="")
a = ap.parse_args()
torch.set_num_threads(1)
set_determinism(0)
dl = oct_split_datalists(a.root, label_fraction=0.25, seed=0, val_fraction=0.1)
tr = CacheDataset(dl["labeled"], oct_train_transforms(64), progress=False)
un = CacheDataset(dl["unlabeled"], oct_train_transforms(64, label_key=None), progress=False)
te = CacheDataset(dl["test"], oct_eval_transforms(64), progress=False)


def mk():
    n = resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25)
    if a.init:
        n.load_state_dict(torch.load(a.init))
    return n.to(memory_format=torch.channels_last)


net = mk()
opt = (
    torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    if a.opt == "adamw"
    else torch.optim.SGD(net.parameters(), lr=a.lr, momentum=0.9, weight_decay=1e-4)
)
L = DataLoader(tr, batch_size=32, shuffle=True)
U = DataLoader(un, batch_size=32, shuffle=True)
if a.recipe == "paper":
    t = create_trainer(
        "ssat", "cpu", a.epochs, L, net, opt, unlabeled_data_loader=U, decollate=False, amp=True
    )
else:
    teacher = mk().eval()
    atk = PGD(net, a.eps, alpha=2.5 * a.eps / a.steps, steps=a.steps)
    t = SemiSupervisedAdversarialTrainer(
        "cpu",
        a.epochs,
        L,
        U,
        net,
        opt,
        nn.CrossEntropyLoss(),
        atk,
        unlabeled_weight=a.wu,
        pseudo_labels="teacher",
        teacher_network=teacher,
        labeled_attack=atk if a.wla > 0 else None,
        labeled_adversarial_weight=a.wla,
        decollate=False,
        amp=True,
    )
t.attack.set_random_state(0)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * len(L), pct_start=0.2)
if a.sched == "onecycle":
    t.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
t0 = time.time()
t.add_event_handler(
    Events.EPOCH_COMPLETED,
    lambda e: print(
        "ep",
        e.state.epoch,
        f"{time.time() - t0:.0f}s",
        {k: round(v, 3) for k, v in e.state.output.items() if isinstance(v, float)},
        e.state.output.get("pseudo_label_histogram"),
        flush=True,
    ),
)
t.run()
net.eval()
X = torch.stack([d["image"].as_tensor() for d in te])
Y = torch.tensor([int(d["label"]) for d in te])
with torch.no_grad():
    P = net(X).argmax(1)
s = classification_summary(Y, P, ["CNV", "DME", "DRUSEN", "NORMAL"])
print(a, "clean", s["accuracy"], s["per_class_recall"])
for eps in [0.002, 0.004, 0.008]:
    r = []
    for A in [PGD(net, eps, steps=10, amp=True), APGD(net, eps, steps=20, amp=True)]:
        xa = A.set_random_state(0)(X, Y)
        with torch.no_grad():
            r.append(round((net(xa).argmax(1) == Y).float().mean().item(), 3))
    print("eps", eps, "pgd10/apgd20", r, flush=True)
if a.save:
    torch.save(net.state_dict(), a.save)
