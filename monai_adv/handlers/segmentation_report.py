"""The robustness report of a segmentation network: report.json, report.md, Dice against eps and an overlay
gallery, at the end of a :class:`~monai_adv.engines.RobustSegmentationEvaluator` epoch."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import

from monai_adv.io import atomic_write_json, atomic_write_text
from monai_adv.keys import RobustKeys
from monai_adv.metrics.segmentation import dense_indices
from monai_adv.precision import record_of
from monai_adv.utils import first_output, gather_output, plain_tensor

Events, _ = optional_import("ignite.engine", name="Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SegmentationRobustnessReport"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


class SegmentationRobustnessReport:
    """Writes how a segmentation network holds up under attack, at the end of each evaluation epoch.

    Reads a :class:`~monai_adv.engines.RobustSegmentationEvaluator` (its per-class Dice and Hausdorff
    distance, clean and per attack, and its attacks' descriptions) and writes to ``output_dir``:

    - ``report.json``: ``n`` (images), ``class_names``, the metric settings, ``clean`` (``mean_dice``,
      ``dice`` per class, ``mean_<hd>`` and ``<hd>`` per class, ``<hd>`` being e.g. ``hd95``) and, per
      attack, its ``type``, ``eps``, ``norm``, ``steps``, the same numbers and ``dice_drop`` (clean mean
      Dice minus attacked);
    - ``report.md``: the same as Markdown tables (one row per attack, then Dice and distance per class);
    - ``dice_vs_eps.png``: mean Dice against eps per attack type, from the clean Dice at eps 0;
    - ``segmentation_gallery.png``: for the first ``gallery_items`` images, the image, the label, the
      clean prediction and the prediction under each gallery attack, as overlays;

    and, given a ``summary_writer``, the mean Dice and distance per attack and the figures to
    TensorBoard. The report is also kept in :attr:`report` and ``engine.state.segmentation_report``.

    Mean Dice is MONAI's mean over every (image, class) pair in which the class is in the label or the
    prediction; per class, the mean over those images.

    Args:
        output_dir: folder for the files (created).
        class_names: the class names in index order (default ``"0"``, ``"1"``, ...).
        title: a title for the tables and plots.
        plots: write the PNG figures.
        gallery_items: images in the gallery (0: none).
        gallery_attacks: the attacks shown in the gallery; None: for each attack type the one with the
            largest eps.
        summary_writer: optional TensorBoard ``SummaryWriter``.

    Raises:
        ValueError: for a negative ``gallery_items``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        title: str = "",
        plots: bool = True,
        gallery_items: int = 4,
        gallery_attacks: Sequence[str] | None = None,
        summary_writer: Any | None = None,
    ) -> None:
        if int(gallery_items) < 0:
            raise ValueError(f"gallery_items must be >= 0, got {gallery_items!r}.")
        self.output_dir = os.fspath(output_dir)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.title = title
        self.plots = bool(plots)
        self.gallery_items = int(gallery_items)
        self.gallery_attacks = None if gallery_attacks is None else list(gallery_attacks)
        self.summary_writer = summary_writer
        self.report: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)
        self._gallery: dict[str, list[torch.Tensor]] = defaultdict(list)

    def attach(self, engine: Engine) -> None:
        """Register the handler's event callbacks on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._gallery = defaultdict(list)

    # the gallery's items ---------------------------------------------------------------------------
    def _shown_attacks(self, engine: Engine) -> list[str]:
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        if self.gallery_attacks is not None:
            return [a for a in self.gallery_attacks if a in descriptions]
        strongest: dict[str, tuple[float, str]] = {}
        for name, d in descriptions.items():
            eps = d.get("eps")
            e = float(eps) if isinstance(eps, (int, float)) else 0.0
            t = str(d.get("type", name))
            if t not in strongest or e > strongest[t][0]:
                strongest[t] = (e, name)
        return [name for _, name in strongest.values()]

    def _collect(self, engine: Engine) -> None:
        wanted = self.plots or self.summary_writer is not None
        if not wanted or len(self._gallery[RobustKeys.IMAGE]) >= self.gallery_items:
            return
        output = engine.state.output
        first = first_output(output) or {}
        if RobustKeys.PRED not in first or RobustKeys.LABEL not in first:
            return
        take = self.gallery_items - len(self._gallery[RobustKeys.IMAGE])
        pred = plain_tensor(gather_output(output, RobustKeys.PRED))[:take]
        k = pred.shape[1]
        self._gallery[RobustKeys.IMAGE] += list(
            plain_tensor(gather_output(output, RobustKeys.IMAGE))[:take, :1].cpu()
        )
        self._gallery[RobustKeys.LABEL] += list(
            dense_indices(gather_output(output, RobustKeys.LABEL)[:take], k).cpu()
        )
        self._gallery["clean"] += list(pred.argmax(1).cpu())
        for name in self._shown_attacks(engine):
            key = RobustKeys.adv(RobustKeys.PRED, name)
            if key in first:
                self._gallery[key] += list(plain_tensor(gather_output(output, key))[:take].argmax(1).cpu())
            image_key = RobustKeys.adv(RobustKeys.IMAGE, name)
            if image_key in first:
                images = plain_tensor(gather_output(output, image_key))[:take, :1].cpu()
                self._gallery[image_key] += list(images)

    # the report ------------------------------------------------------------------------------------
    def compute(self, engine: Engine) -> dict[str, Any]:
        """The report of the evaluator's last epoch (see the class docstring).

        Raises:
            ValueError: when the engine is not a segmentation evaluator that has run an epoch.
        """
        per_class = getattr(engine, "per_class_results", None)
        if per_class is None:
            raise ValueError(
                "SegmentationRobustnessReport reads a RobustSegmentationEvaluator (monai_adv.engines); "
                f"got {type(engine).__name__}."
            )
        results = per_class()
        hd = engine.hausdorff_name
        first = 0 if engine.include_background else 1
        k = engine.num_classes
        names = self.class_names or [str(i) for i in range(k)]
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for a network with {k} output classes.")
        names = names[first:]
        details = engine.state.metric_details["dice"]
        descriptions = getattr(engine, "attack_descriptions", None) or {}

        def numbers(entry: dict[str, Any]) -> dict[str, Any]:
            out = {"mean_dice": entry["mean_dice"], "dice": dict(zip(names, entry["dice"]))}
            if hd is not None:
                out["mean_" + hd] = entry["mean_" + hd]
                out[hd] = dict(zip(names, entry[hd]))
            return out

        clean = numbers(results["clean"])
        report: dict[str, Any] = {
            "title": self.title,
            "epoch": int(engine.state.epoch),
            "n": int(torch.as_tensor(details).shape[0]),
            "class_names": names,
            "metrics": {
                "dice": "Dice per image and class (0 where the class is in only one of label and prediction)",
                "hausdorff": hd,
                "hausdorff_unit": "pixels" if getattr(engine, "spacing", None) is None else "spacing units",
                "include_background": bool(engine.include_background),
            },
            "clean": clean,
            "compute": record_of(engine),
            "attacks": {},
        }
        for name, entry in results.items():
            if name == "clean":
                continue
            d = descriptions.get(name, {})
            a = {
                "type": d.get("type", name),
                "eps": d.get("eps"),
                "norm": d.get("norm"),
                "steps": d.get("steps"),
            }
            a.update(numbers(entry))
            a["dice_drop"] = (
                None
                if clean["mean_dice"] is None or a["mean_dice"] is None
                else clean["mean_dice"] - a["mean_dice"]
            )
            report["attacks"][name] = a
        return report

    def markdown(self, report: dict[str, Any]) -> str:
        """The report as Markdown tables."""
        hd = report["metrics"]["hausdorff"]
        clean = report["clean"]
        lines = [f"## Segmentation robustness report{': ' + self.title if self.title else ''}", ""]
        lines.append(
            f"{report['n']} images; clean mean Dice {_fmt(clean['mean_dice'])}"
            + (
                f", mean {hd.upper()} {_fmt(clean['mean_' + hd], 2)} {report['metrics']['hausdorff_unit']}"
                if hd
                else ""
            )
            + "."
        )
        lines += [
            "",
            "| attack | type | eps | steps | mean Dice | Dice drop |"
            + (f" mean {hd.upper()} |" if hd else ""),
        ]
        lines.append("|---|---|---|---|---|---|" + ("---|" if hd else ""))
        lines.append(
            f"| clean | - | 0 | - | {_fmt(clean['mean_dice'])} | - |"
            + (f" {_fmt(clean['mean_' + hd], 2)} |" if hd else "")
        )
        for name, a in report["attacks"].items():
            eps = a["eps"]
            eps_s = "-" if eps is None else (f"{eps:.4g}" if isinstance(eps, float) else str(eps))
            lines.append(
                f"| {name} | {a['type']} | {eps_s} | {_fmt(a['steps'])} | {_fmt(a['mean_dice'])} | "
                f"{_fmt(a['dice_drop'])} |" + (f" {_fmt(a['mean_' + hd], 2)} |" if hd else "")
            )
        columns = ["clean"] + list(report["attacks"])
        for metric, digits in (("dice", 3), (hd, 2)):
            if metric is None:
                continue
            lines += ["", f"{'Dice' if metric == 'dice' else metric.upper()} per class:", ""]
            lines.append("| class | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---|" * len(columns))
            for c in report["class_names"]:
                row = [clean[metric].get(c)] + [
                    report["attacks"][a][metric].get(c) for a in report["attacks"]
                ]
                lines.append(f"| {c} | " + " | ".join(_fmt(v, digits) for v in row) + " |")
        return "\n".join(lines) + "\n"

    def _figures(self, report: dict[str, Any]) -> dict[str, Any]:
        from monai_adv.visualize.segmentation import plot_dice_vs_eps, plot_segmentation_gallery

        figs = {}
        curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for a in report["attacks"].values():
            if isinstance(a["eps"], (int, float)) and a["mean_dice"] is not None:
                curves[str(a["type"])].append((float(a["eps"]), a["mean_dice"]))
        if curves:
            figs["dice_vs_eps"] = plot_dice_vs_eps(curves, report["clean"]["mean_dice"], self.title)
        g = self._gallery
        if g.get(RobustKeys.IMAGE):
            n = len(g[RobustKeys.IMAGE])
            preds = {"clean": g["clean"]}
            adv_images = {}
            for key, masks in g.items():
                if key.startswith(RobustKeys.PRED + "/") and len(masks) == n:
                    name = key.split("/", 1)[1]
                    preds[name] = masks
                    image_key = RobustKeys.adv(RobustKeys.IMAGE, name)
                    if len(g.get(image_key, [])) == n:
                        adv_images[name] = g[image_key]
            figs["segmentation_gallery"] = plot_segmentation_gallery(
                g[RobustKeys.IMAGE],
                g[RobustKeys.LABEL],
                preds,
                class_names=self.class_names,
                adversarial_images=adv_images,
                title=self.title,
            )
        return figs

    def _write(self, engine: Engine) -> None:
        import matplotlib.pyplot as plt

        from monai_adv.visualize.plots import save_figure

        report = self.compute(engine)
        self.report = report
        engine.state.segmentation_report = report
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(self.output_dir, "report.json"), report)
        atomic_write_text(os.path.join(self.output_dir, "report.md"), self.markdown(report))
        epoch = report["epoch"] or 0
        hd = report["metrics"]["hausdorff"]
        if self.summary_writer is not None:
            for name, a in [("clean", report["clean"])] + list(report["attacks"].items()):
                for key in ("mean_dice",) + ((f"mean_{hd}",) if hd else ()):
                    if a.get(key) is not None:
                        self.summary_writer.add_scalar(f"segmentation/{key}/{name}", a[key], epoch)
        if self.plots or self.summary_writer is not None:
            for fig_name, fig in self._figures(report).items():
                if self.plots:
                    save_figure(fig, os.path.join(self.output_dir, f"{fig_name}.png"))
                if self.summary_writer is not None:
                    self.summary_writer.add_figure(f"segmentation/{fig_name}", fig, epoch)
                plt.close(fig)
        self.logger.info(f"segmentation robustness report written to {self.output_dir}")
