"""Small helpers the OCT bundle's configs call (``bundles/oct_robust_classification``).

They glue the package's components together for ``python -m monai.bundle run``: make sure the data
set exists (generating the embedded synthetic OCT set on the first run), divide it into labeled,
unlabeled, validation and test lists, list the files to predict, load checkpoints safely, and write
the bundle's ``report.json`` and ``predictions.csv``. Everything here is plain Python with clear
errors; the models, attacks, engines and detectors themselves come from the rest of ``monai_adv``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from monai_adv.data.datalists import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    kermany_datalist,
    split_by_patient,
    volume_datalist,
)
from monai_adv.data.synthetic import write_synthetic_oct_dataset
from monai_adv.data.utils import IMAGE_EXTENSIONS, OCT_CLASSES

__all__ = [
    "prepare_oct_dataset",
    "oct_split_datalists",
    "image_datalist",
    "load_weights",
    "require_file",
    "load_optional_detector",
    "detection_handlers",
    "fit_detector",
    "attack_grid",
    "rank",
    "is_main_process",
    "BundleReportWriter",
    "PredictionWriter",
    "bundle_report",
    "compare_reports",
    "run_demo",
]

logger = logging.getLogger(__name__)


def rank() -> int:
    """The process rank under ``torch.distributed`` (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(os.path.expanduser(os.fspath(a))) == os.path.abspath(
        os.path.expanduser(os.fspath(b))
    )


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def prepare_oct_dataset(
    dataset_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike | None = None,
    n_per_class: int | Mapping[str, int] | None = None,
    image_size: int = 64,
    seed: int = 0,
    num_workers: int | None = 1,
    progress: bool = True,
) -> str:
    """Make sure ``dataset_dir`` holds a data set in the Kermany layout and return its path.

    When ``dataset_dir`` is ``synthetic_dir`` (the bundle's default), the synthetic OCT set is written
    there on the first call and reused afterwards (the writer is idempotent; under
    ``torch.distributed`` rank 0 writes while the others wait). Any other folder must exist and hold
    files.

    Args:
        dataset_dir: the data set root (``--dataset_dir``).
        synthetic_dir: the folder of the generated synthetic set.
        n_per_class: images per class, one number for every split or ``{split: n}``; default
            ``{"train": 200, "val": 25, "test": 50}``.
        image_size: side of the generated images.
        seed: seed of the generated set.
        num_workers: processes used to render the synthetic images.
        progress: show a progress bar while rendering.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder.
        ValueError: when it is empty.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(dataset_dir)))
    if synthetic_dir is not None and _same_path(path, synthetic_dir):
        counts = dict(n_per_class) if isinstance(n_per_class, Mapping) else None
        if counts is None:
            n = 200 if n_per_class is None else int(n_per_class)
            counts = {"train": n, "val": max(1, n // 8), "test": max(1, n // 4)}
        if is_main_process():
            write_synthetic_oct_dataset(
                path, image_size=int(image_size), seed=int(seed), splits=counts,
                num_workers=num_workers, progress=progress,
            )  # fmt: skip
        _barrier()
        return path
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"dataset_dir {path!r} does not exist; point --dataset_dir at a folder in the Kermany layout "
            "(<dataset_dir>/train/<CNV|DME|DRUSEN|NORMAL>/*.jpeg, and test/), or leave it out to use the "
            "synthetic OCT set."
        )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset_dir {path!r} is not a folder.")
    if not any(True for _ in os.scandir(path)):
        raise ValueError(f"dataset_dir {path!r} is an empty folder.")
    return path


def _strip_labels(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in it.items() if k != "label"} for it in items]


def _limit(items: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    return items if n is None or n <= 0 else items[: int(n)]


def oct_split_datalists(
    root: str | os.PathLike,
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The labeled, unlabeled, validation and test datalists of a Kermany-layout data set.

    - ``train`` (minus the validation patients) is divided by patient into ``labeled`` (about
      ``label_fraction`` of each class) and ``unlabeled`` (labels removed);
    - images in an ``unlabeled/`` split folder are added to ``unlabeled``;
    - ``val`` comes from a ``val/`` split folder, or else ``val_fraction`` of the train patients;
    - ``test`` comes from ``test/``, or else is the validation list.

    When no unlabeled image is left (``label_fraction=1`` and no ``unlabeled/`` folder) the labeled
    images, without labels, serve as the unlabeled data too (as SSAT does with full labels), with a
    warning.

    Args:
        root: the data set root.
        label_fraction: share of the training images that keep their label, in (0, 1].
        seed: seed of the patient shuffles.
        val_fraction: share of the training patients held out for validation when there is no ``val/``.
        max_items: cap every list at this many items (a smoke-test option; None or 0: no cap).

    Raises:
        FileNotFoundError: for a missing root or ``train/`` folder.
        ValueError: for an empty split, a bad fraction, or a layout that does not parse (from
            :func:`~monai_adv.data.kermany_datalist`).
    """
    root = Path(root)
    train, _ = kermany_datalist(root, "train", label_fraction=1.0, seed=seed)
    if (root / "val").is_dir():
        val, _ = kermany_datalist(root, "val", label_fraction=1.0, seed=seed)
        rest = train
    else:
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
        val, rest = split_by_patient(train, float(val_fraction), seed=seed + 1)
        if not rest:
            raise ValueError(f"{root}/train holds too few patients to hold out a validation set.")
    if float(label_fraction) >= 1.0:
        labeled, unlabeled = rest, []
    else:
        labeled, unl = split_by_patient(rest, float(label_fraction), seed=seed)
        unlabeled = _strip_labels(unl)
    if (root / "unlabeled").is_dir():
        unlabeled += kermany_datalist(root, "unlabeled")[1]
    if not unlabeled:
        warnings.warn(
            "no unlabeled images (label_fraction=1 and no unlabeled/ folder): the labeled images, without "
            "their labels, are used as the unlabeled data.",
            stacklevel=2,
        )
        unlabeled = _strip_labels(labeled)
    test = (
        kermany_datalist(root, "test", label_fraction=1.0, seed=seed)[0] if (root / "test").is_dir() else val
    )
    out = {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test}
    return {k: _limit(v, max_items) for k, v in out.items()}


def image_datalist(dataset_dir: str | os.PathLike, bscans: bool = True) -> list[dict[str, Any]]:
    """Every OCT image under ``dataset_dir`` (recursively), for inference.

    JPEG/PNG/BMP/TIFF files give one item each; DICOM and NIfTI files give one item per B-scan
    (``{"image": path, "frame": i}``). Hidden files and folders are skipped; files are sorted.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder.
        ValueError: when it holds no image.
    """
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(dataset_dir))))
    if not root.exists():
        raise FileNotFoundError(f"dataset_dir {str(root)!r} does not exist.")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {str(root)!r} is not a folder.")
    images, volumes = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            low = name.lower()
            if low.startswith("."):
                continue
            p = os.path.join(dirpath, name)
            if low.endswith(IMAGE_EXTENSIONS):
                images.append({"image": p})
            elif low.endswith(DICOM_EXTENSIONS + NIFTI_EXTENSIONS):
                volumes.append(p)
    items = images + (volume_datalist(volumes, bscans=bscans) if volumes else [])
    if not items:
        raise ValueError(
            f"dataset_dir {str(root)!r} holds no OCT image (extensions "
            f"{IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS})."
        )
    items.sort(key=lambda it: (it["image"], it.get("frame", 0)))
    return items


def require_file(path: str | os.PathLike, what: str = "file", hint: str = "") -> str:
    """``path`` if it is a file, else a ``FileNotFoundError`` naming it (and ``hint``)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what} {p!r} does not exist{'; ' + hint if hint else ''}.")
    return p


def load_weights(
    network: torch.nn.Module, ckpt_file: str | os.PathLike, key: str | None = None, strict: bool = True
) -> torch.nn.Module:
    """Load a model checkpoint (``weights_only``) into ``network`` and return the network.

    Accepts a plain state dict (what the bundle's ``CheckpointSaver`` writes to ``models/model.pt``)
    or a dict holding it under ``key`` (or ``"model"``/``"network"``).

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        ValueError: naming the file when it cannot be read or does not fit the network.
    """
    path = require_file(ckpt_file, "model checkpoint", "train the model first (configs/train.json)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read model checkpoint {path!r}: {e}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"model checkpoint {path!r} does not hold a state dict.")
    for k in (key, "model", "network"):
        if k is not None and k in state and isinstance(state[k], Mapping):
            state = state[k]
            break
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ValueError(f"model checkpoint {path!r} does not fit the network: {e}") from e
    return network


def load_optional_detector(path: str | os.PathLike, network: torch.nn.Module, required: bool = False) -> Any:
    """The detector saved at ``path`` bound to ``network``, or ``None`` when there is none (and not ``required``)."""
    from monai_adv.detectors import load_detector

    p = os.fspath(path)
    if not os.path.isfile(p):
        if required:
            raise FileNotFoundError(
                f"detector file {p!r} does not exist; fit it first (configs/fit_detector.json)."
            )
        logger.warning(
            f"no detector at {p!r}: predictions carry no adversarial score (run fit_detector.json)."
        )
        return None
    return load_detector(p, network, progress=False)


def detection_handlers(detector: Any, **kwargs: Any) -> list:
    """``[AdversarialDetectionHandler(detector)]``, or ``[]`` without a detector."""
    from monai_adv.handlers import AdversarialDetectionHandler

    return [] if detector is None else [AdversarialDetectionHandler(detector, **kwargs)]


def fit_detector(
    detector: Any,
    fit_loader: Any,
    calibration_loader: Any,
    fpr: float = 0.05,
    save_path: str | os.PathLike | None = None,
    use_labels: bool = True,
) -> Any:
    """Fit ``detector`` on clean data, calibrate its threshold at ``fpr`` on other clean data, save it.

    Only rank 0 writes ``save_path`` (atomically, by the detector's ``save``). Returns the detector.
    """
    detector.fit(fit_loader, use_labels=use_labels)
    threshold = detector.calibrate(calibration_loader, fpr=fpr)
    logger.info(f"{type(detector).__name__} fitted; threshold {threshold:.6g} at a target FPR of {fpr}")
    if save_path is not None and is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(save_path))), exist_ok=True)
        detector.save(save_path)
        print(f"detector saved to {os.fspath(save_path)}", flush=True)
    return detector


def attack_grid(
    network: torch.nn.Module, grid: Sequence[Mapping[str, Any]], seed: int | None = 0, **common: Any
) -> dict[str, Any]:
    """``{name: attack}`` for every attack and eps of ``grid``, for a RobustEvaluator.

    Each entry of ``grid`` is ``{"name": "pgd", "attack": "PGD", "eps": [0.002, 0.004], ...}``: the
    class name in :mod:`monai_adv.transforms`, one eps or a list of them, and any other keyword
    argument of that attack (``steps``, ``n_queries``, ...). The attacks are named
    ``"<name>_eps<eps>"``; ``common`` keyword arguments (e.g. ``value_range``) go to every attack.

    Raises:
        ValueError: for an unknown attack class, an entry without ``name``/``attack``/``eps``, or a
            repeated name.
    """
    from monai_adv import transforms

    out: dict[str, Any] = {}
    for i, entry in enumerate(grid):
        entry = dict(entry)
        missing = [k for k in ("name", "attack", "eps") if k not in entry]
        if missing:
            raise ValueError(f"attack grid entry {i} ({entry}) has no {missing}.")
        name, cls_name, eps_list = entry.pop("name"), entry.pop("attack"), entry.pop("eps")
        cls = getattr(transforms, str(cls_name), None)
        if not isinstance(cls, type):
            raise ValueError(f"unknown attack {cls_name!r} in the attack grid; see monai_adv.transforms.")
        for eps in eps_list if isinstance(eps_list, (list, tuple)) else [eps_list]:
            key = f"{name}_eps{float(eps):g}"
            if key in out:
                raise ValueError(f"attack {key!r} appears twice in the attack grid.")
            atk = cls(network, eps=float(eps), **{**common, **entry})
            if seed is not None and hasattr(atk, "set_random_state"):
                atk.set_random_state(seed)
            out[key] = atk
    if not out:
        raise ValueError("the attack grid is empty.")
    return out


def _atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def bundle_report(report: Mapping[str, Any], eps_of: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's ``report.json`` layout from a :class:`~monai_adv.handlers.RobustnessReport` report.

    ``{"clean_accuracy", "clean_flag_rate", "n", "detector", "risk_parameters", "attacks": [{"name",
    "type", "eps", "robust_accuracy", "detection_auroc", "detection_tpr", "undetected_error",
    "risk_classifier", "risk_detector", "risk_system", "risk", "risk_no_detector"}, ...]}``.
    """
    attacks = []
    for name, a in report.get("attacks", {}).items():
        risk = a.get("risk") or {}
        no_det = a.get("risk_no_detector") or {}
        eps = a.get("eps")
        if eps is None and eps_of is not None:
            eps = eps_of.get(name)
        attacks.append(
            {
                "name": name,
                "type": a.get("type"),
                "eps": eps,
                "robust_accuracy": a.get("accuracy"),
                "detection_auroc": a.get("auroc"),
                "detection_tpr": a.get("tpr"),
                "undetected_error": risk.get("undetected_error", no_det.get("undetected_error")),
                "risk_classifier": no_det.get("risk_classifier"),
                "risk_detector": risk.get("risk_detector"),
                "risk_system": risk.get("risk_system", no_det.get("risk_system")),
                "risk": risk or None,
                "risk_no_detector": no_det or None,
            }
        )
    clean = report.get("clean", {})
    return _finite(
        {
            "title": report.get("title", ""),
            "n": report.get("n"),
            "clean_accuracy": clean.get("accuracy"),
            "clean_flag_rate": clean.get("flag_rate"),
            "detector": report.get("detector"),
            "risk_parameters": report.get("risk_parameters"),
            "attacks": attacks,
        }
    )


class BundleReportWriter:
    """Writes ``report.json`` in the bundle's layout (see :func:`bundle_report`) at the end of an evaluation.

    Attach it after a :class:`~monai_adv.handlers.RobustnessReport` (which puts its report in
    ``engine.state.robustness_report`` and writes ``report.md`` and the plots); the full
    report of that handler stays in ``output_dir`` as ``robustness_report.json``.

    Args:
        output_dir: where ``report.json`` goes.
        filename: the file name.
        summary: print a one-line summary per attack to the log.
    """

    def __init__(
        self, output_dir: str | os.PathLike, filename: str = "report.json", summary: bool = True
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.summary = summary
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        full = getattr(engine.state, "robustness_report", None)
        if full is None:
            raise RuntimeError(
                "BundleReportWriter found no engine.state.robustness_report; attach a "
                "monai_adv.handlers.RobustnessReport before it."
            )
        attacks = getattr(engine, "attacks", {}) or {}
        eps_of = {n: getattr(getattr(a, "base_attack", None), "eps", None) for n, a in attacks.items()}
        self.report = bundle_report(full, eps_of)
        if not is_main_process():
            return
        out = os.path.join(self.output_dir, self.filename)
        full_path = os.path.join(self.output_dir, "robustness_report.json")
        _atomic_write(full_path, json.dumps(_finite(full), indent=2, default=str))
        _atomic_write(out, json.dumps(self.report, indent=2, default=str))
        if self.summary:
            logger.info(f"clean accuracy {self.report['clean_accuracy']:.4f}")
            for a in self.report["attacks"]:
                auroc = a["detection_auroc"]
                logger.info(
                    f"{a['name']}: eps {a['eps']}, robust accuracy {a['robust_accuracy']:.4f}, detection AUROC "
                    f"{'-' if auroc is None else f'{auroc:.4f}'}, system risk {a['risk_system']}"
                )
        print(f"report written to {out}", flush=True)


class PredictionWriter:
    """Writes ``predictions.csv``: one row per image with class probabilities, the predicted class and,
    when a detector scores the predictions, the adversarial score and flag.

    Columns: ``image``, ``frame``, ``prob_<CLASS>`` for each class, ``pred_class``, ``pred_index``,
    ``adversarial_score``, ``adversarial_flag`` (empty without a detector).

    Args:
        output_dir: where the file goes.
        filename: the file name.
        class_names: the class names in output order.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        class_names: Sequence[str] = OCT_CLASSES,
        score_key: str = "uad_score",
        flag_key: str = "uad_flag",
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.class_names = [str(c) for c in class_names]
        self.score_key = score_key
        self.flag_key = flag_key
        self.rows: list[list[Any]] = []

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    @staticmethod
    def _meta_list(batch: Any, key: str, n: int) -> list:
        img = batch.get("image") if isinstance(batch, Mapping) else None
        meta = getattr(img, "meta", None) or {}
        v = meta.get(key)
        if v is None:
            return [""] * n
        if isinstance(v, torch.Tensor):
            v = v.reshape(-1).tolist()
        if isinstance(v, (str, int, float)):
            v = [v] * n
        return list(v)

    def _collect(self, engine: Any) -> None:
        from monai_adv.handlers.risk import gather_output

        output = engine.state.output
        logits = gather_output(output, "pred").detach().float().cpu()
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise ValueError(
                f"predictions of shape {tuple(logits.shape)} do not match the {len(self.class_names)} class names."
            )
        probs = logits.softmax(dim=1)
        n = probs.shape[0]
        scores = gather_output(output, self.score_key, required=False)
        flags = gather_output(output, self.flag_key, required=False)
        batch = engine.state.batch
        names = self._meta_list(batch, "filename_or_obj", n)
        frames = self._meta_list(batch, "frame", n)
        for i in range(n):
            idx = int(probs[i].argmax())
            frame = frames[i]
            row = [names[i], "" if frame is None or frame == "" or int(frame) < 0 else int(frame)]
            row += [f"{float(p):.6f}" for p in probs[i]]
            row += [self.class_names[idx], idx]
            row.append("" if scores is None else f"{float(scores.reshape(-1)[i]):.6g}")
            row.append("" if flags is None else int(bool(flags.reshape(-1)[i])))
            self.rows.append(row)

    def _write(self, engine: Any) -> None:
        if not is_main_process():
            return
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            ["image", "frame", *[f"prob_{c}" for c in self.class_names], "pred_class", "pred_index",
             "adversarial_score", "adversarial_flag"]
        )  # fmt: skip
        w.writerows(self.rows)
        _atomic_write(self.path, buf.getvalue())
        print(f"{len(self.rows)} predictions written to {self.path}", flush=True)


# --------------------------------------------------------------------------------------- comparison
def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{digits}f}"


def compare_reports(reports: Mapping[str, str | os.PathLike | Mapping[str, Any]]) -> str:
    """A Markdown table comparing the bundle's ``report.json`` of several systems, attack by attack.

    Args:
        reports: ``{system name: report.json path or its loaded dict}``.

    Raises:
        FileNotFoundError: for a missing report file.
        ValueError: for a file that is not a bundle report.
    """
    loaded: dict[str, Mapping[str, Any]] = {}
    for name, r in reports.items():
        if not isinstance(r, Mapping):
            path = require_file(r, "report", "run configs/evaluate.json first")
            with open(path) as f:
                r = json.load(f)
            if "clean_accuracy" not in r or not isinstance(r.get("attacks"), list):
                raise ValueError(f"{path!r} is not a bundle report (no clean_accuracy / attacks list).")
        loaded[name] = r
    names = list(loaded)
    head = "| attack | eps | " + " | ".join(f"{n}: accuracy | {n}: AUROC | {n}: risk" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + 3 * len(names))]
    lines.append(
        "| clean | - | "
        + " | ".join(
            f"{_num(loaded[n]['clean_accuracy'])} | - | {_num(loaded[n].get('clean_flag_rate'))} (flag rate)"
            for n in names
        )
        + " |"
    )
    order: list[str] = []
    for n in names:
        order += [a["name"] for a in loaded[n]["attacks"] if a["name"] not in order]
    for atk in order:
        cells, eps = [], None
        for n in names:
            a = next((a for a in loaded[n]["attacks"] if a["name"] == atk), None)
            if a is None:
                cells.append("- | - | -")
                continue
            eps = a.get("eps") if eps is None else eps
            cells.append(
                f"{_num(a.get('robust_accuracy'))} | {_num(a.get('detection_auroc'))} | {_num(a.get('risk_system'))}"
            )
        lines.append(f"| {atk} | {eps if eps is not None else '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _bundle_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "bundles" / "oct_robust_classification"
    return here


def run_demo(
    bundle_dir: str | os.PathLike | None = None,
    quick: bool = False,
    methods: Sequence[str] = ("supervised", "ssat"),
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Train, fit the detector for, and evaluate each method with the OCT bundle, then compare them.

    Runs, in this process, what the bundle README's commands run: for each method ``train.json``
    (plus ``train_<method>.json`` for a baseline), then ``fit_detector.json`` and ``evaluate.json``;
    finally prints :func:`compare_reports` of the ``eval/<method>/report.json`` files and where the
    plots are. Returns the table.

    Args:
        bundle_dir: the bundle folder (default: the one in this repository).
        quick: append ``configs/quick.json`` (smoke size).
        methods: ``"ssat"`` and/or baselines ``"supervised"``, ``"madry"``, ``"trades"``.
        overrides: extra top-level config overrides (e.g. ``{"max_epochs": 3}``).
    """
    from monai.bundle import run as bundle_run

    root = Path(bundle_dir) if bundle_dir is not None else _bundle_dir()
    if not (root / "configs" / "train.json").is_file():
        raise FileNotFoundError(f"{str(root)!r} is not the OCT bundle folder (no configs/train.json).")
    extra = ["configs/quick.json"] if quick else []
    cwd = os.getcwd()
    os.chdir(root)
    reports = {}
    try:
        for method in methods:
            base = ["configs/train.json"] + ([] if method == "ssat" else [f"configs/train_{method}.json"])
            for step in ([], ["configs/fit_detector.json"], ["configs/evaluate.json"]):
                files = base + step + extra
                print(f"\n=== {method}: {' + '.join(os.path.basename(f) for f in files)} ===", flush=True)
                bundle_run(
                    config_file=files,
                    meta_file="configs/metadata.json",
                    logging_file="configs/logging.conf",
                    **dict(overrides or {}),
                )
            reports[method] = str(root / "eval" / method / "report.json")
    finally:
        os.chdir(cwd)
    table = compare_reports(reports)
    print("\nOCT robustness: accuracy, detection AUROC and system risk per attack\n")
    print(table)
    for m in methods:
        print(f"{m}: plots and report.md in {root / 'eval' / m}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_adv.bundle compare A=eval/a/report.json B=...`` or ``python -m monai_adv.bundle demo``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m monai_adv.bundle", description=main.__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="compare bundle report.json files")
    c.add_argument("reports", nargs="+", help="NAME=PATH or PATH (named after its folder)")
    d = sub.add_parser(
        "demo", help="train, fit the detector and evaluate the baseline and SSAT, then compare"
    )
    d.add_argument("--quick", action="store_true", help="smoke size (configs/quick.json)")
    d.add_argument("--methods", nargs="+", default=["supervised", "ssat"])
    d.add_argument("--bundle-dir", default=None)
    d.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: torch's default)")
    args = parser.parse_args(argv)
    if args.cmd == "compare":
        reports = {}
        for r in args.reports:
            name, _, path = r.rpartition("=") if "=" in r else (Path(r).parent.name, "", r)
            reports[name] = path
        print(compare_reports(reports))
    else:
        overrides = {"num_threads": args.threads} if args.threads > 0 else None
        run_demo(args.bundle_dir, quick=args.quick, methods=args.methods, overrides=overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
