"""What a bundle says about itself: the ``"monai_adv"`` section of its ``configs/metadata.json``.

The demo runner, ``init`` and the comparer read a bundle from this section, so adding a bundle needs
no code change. MONAI ignores the key (``ConfigWorkflow`` and ``verify_net_in_out`` read other keys).
Only ``task`` and ``systems`` are needed to describe a bundle; ``demo`` (with ``steps``) is needed to
run its demo, ``quick`` to run it at smoke size. :class:`BundleDescription` reads and checks the
section (its docstring shows it), naming the key to fix in its errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.bundle.locate import METADATA_SECTION, bundle_section

__all__ = ["TASKS", "DemoStep", "DemoSystem", "DemoRun", "BundleDescription"]

#: the tasks a bundle may declare; each has its own report comparer
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo, run for each system: the system's configs followed by ``configs``."""

    #: the step's name (``train``, ``fit_detector``, ``evaluate``); it names the step's log file.
    name: str
    #: the config files the step adds to the system's, relative to the bundle folder.
    configs: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoSystem:
    """One system a bundle can train: a registered training method with the bundle's configs for it."""

    #: the system's name (``eval/<name>/report.json`` holds its report).
    name: str
    #: the registered training method it uses (``"supervised"``, ``"madry"``, ``"trades"``, ``"rst"``,
    #: ``"ssat"``, ...).
    method: str
    #: its training config files, in the order ``monai.bundle run`` stacks them.
    configs: tuple[str, ...]
    #: one line saying how it is trained, printed by the demo.
    recipe: str = ""
    #: the system whose trained model it needs, as its initial weights or its teacher (train that one first),
    #: or None.
    starts_from: str | None = None


@dataclass(frozen=True)
class DemoRun:
    """One ``monai.bundle run`` of the demo: a step of a system, with the config files it stacks."""

    #: the system's name.
    system: str
    #: the step's name.
    step: str
    #: the config files, relative to the bundle folder, in the order ``monai.bundle run`` stacks them.
    configs: tuple[str, ...]


def _where(path: Path, key: str) -> str:
    return f"{path}: {METADATA_SECTION}.{key}"


def _strings(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise ValueError(f"{_where(path, key)} must be a list of strings, got {value!r}.")
    return tuple(value)


@dataclass(frozen=True)
class BundleDescription:
    """A bundle as the ``"monai_adv"`` section of its ``configs/metadata.json`` describes it to monai-adv.

    The section, in the classification bundle's words (abridged)::

        "monai_adv": {
            "default": true,                        # the bundle demo and init use when none is named
            "task": "classification",               # or "segmentation": which comparer reads the reports
            "report": "eval/{system}/report.json",  # each system's report, relative to the work folder
            "quick": {"config": "configs/quick.json", "work_dir": "quick"},
            "demo": {
                "title": "OCT robustness: ...",     # printed above the comparison
                "systems": ["supervised", "ssat", "ssat_robust"],   # what demo runs by default, in order
                "steps": [                          # per system: its configs plus each step's
                    {"name": "train", "configs": []},
                    {"name": "fit_detector", "configs": ["configs/fit_detector.json"]},
                    {"name": "evaluate", "configs": ["configs/evaluate.json"]}
                ],
                "outputs": "plots and report.md"    # what eval/<system>/ holds, said at the end
            },
            "systems": {                            # every system the bundle can train
                "ssat": {
                    "method": "ssat",               # the registered training method it uses
                    "configs": ["configs/train.json", "configs/finetune.json"],
                    "starts_from": "supervised",    # the system whose model it needs (weights, teacher)
                    "recipe": "the paper's SSAT loss exactly ..."
                }
            }
        }

    Only ``task`` and ``systems`` are needed to describe a bundle; ``demo`` (with ``steps``) is needed
    to run its demo, ``quick`` to run it at smoke size.
    """

    #: the bundle folder.
    root: Path
    #: ``"classification"`` or ``"segmentation"`` (:data:`TASKS`).
    task: str
    #: every system the bundle can train, by name, in the metadata's order.
    systems: Mapping[str, DemoSystem]
    #: the systems ``demo`` runs by default, in training order.
    demo_systems: tuple[str, ...] = ()
    #: the demo's steps, run for each system in this order (the first is its training).
    steps: tuple[DemoStep, ...] = ()
    #: printed above the demo's comparison.
    title: str = ""
    #: what each system's report folder holds, said at the end of the demo.
    outputs: str = "the report"
    #: each system's report, relative to the work folder, with ``{system}`` in it.
    report: str = "eval/{system}/report.json"
    #: the config that makes a run smoke-sized, or None.
    quick_config: str | None = None
    #: where a quick run writes, relative to the bundle folder.
    quick_work_dir: str = "quick"
    #: whether this is the bundle ``demo`` and ``init`` use when none is named.
    default: bool = False
    #: the ``metadata.json`` it was read from (named in errors).
    metadata_file: Path = field(default=Path("configs/metadata.json"), repr=False)

    @property
    def name(self) -> str:
        """The bundle's name: its folder name."""
        return self.root.name

    @classmethod
    def from_bundle(cls, bundle_dir: str | os.PathLike) -> BundleDescription:
        """Read and check the ``"monai_adv"`` section of ``<bundle_dir>/configs/metadata.json``.

        Every config file it names must exist in the bundle, every ``starts_from`` and demo system
        must be one of its systems.

        Args:
            bundle_dir: the bundle folder.

        Raises:
            FileNotFoundError: when the bundle has no ``configs/metadata.json``.
            ValueError: when the section is missing, or a key is missing or wrong; the message names
                the file and the key.
        """
        root = Path(bundle_dir)
        path = root / "configs" / "metadata.json"
        section = bundle_section(root)
        if not section:
            raise ValueError(
                f"{path}: no {METADATA_SECTION!r} section; a bundle tells monai-adv its task, its systems and "
                "its demo steps there (see monai_adv.bundle.description)."
            )
        task = section.get("task")
        if task not in TASKS:
            raise ValueError(f"{_where(path, 'task')} must be one of {TASKS}, got {task!r}.")

        def config_files(value: Any, key: str) -> tuple[str, ...]:
            files = _strings(value, path, key)
            missing = [f for f in files if not (root / f).is_file()]
            if missing:
                raise ValueError(f"{_where(path, key)} names {missing}, not found in {root}.")
            return files

        raw_systems = section.get("systems")
        if not isinstance(raw_systems, Mapping) or not raw_systems:
            raise ValueError(f"{_where(path, 'systems')} must map each system's name to its description.")
        systems: dict[str, DemoSystem] = {}
        for name, s in raw_systems.items():
            key = f"systems.{name}"
            if not isinstance(s, Mapping):
                raise ValueError(
                    f"{_where(path, key)} must be an object (method, configs, recipe, starts_from)."
                )
            unknown = set(s) - {"method", "configs", "recipe", "starts_from"}
            if unknown:
                raise ValueError(f"{_where(path, key)} has unknown keys {sorted(unknown)}.")
            method = s.get("method")
            if not isinstance(method, str) or not method:
                raise ValueError(f"{_where(path, key + '.method')} must name a registered training method.")
            systems[name] = DemoSystem(
                name=name,
                method=method,
                configs=config_files(s.get("configs"), key + ".configs"),
                recipe=str(s.get("recipe", "")),
                starts_from=s.get("starts_from"),
            )
        for s in systems.values():
            if s.starts_from is not None and s.starts_from not in systems:
                raise ValueError(
                    f"{_where(path, f'systems.{s.name}.starts_from')} is {s.starts_from!r}, not one of the "
                    f"bundle's systems {list(systems)}."
                )

        demo = section.get("demo", {})
        if not isinstance(demo, Mapping):
            raise ValueError(f"{_where(path, 'demo')} must be an object (title, systems, steps, outputs).")
        demo_systems = _strings(demo.get("systems", []), path, "demo.systems")
        unknown_systems = [s for s in demo_systems if s not in systems]
        if unknown_systems:
            raise ValueError(
                f"{_where(path, 'demo.systems')} names {unknown_systems}, not among {list(systems)}."
            )
        steps = []
        for i, st in enumerate(demo.get("steps", [])):
            if not isinstance(st, Mapping) or not isinstance(st.get("name"), str):
                raise ValueError(
                    f"{_where(path, f'demo.steps[{i}]')} must be an object with a name and configs."
                )
            steps.append(
                DemoStep(st["name"], config_files(st.get("configs", []), f"demo.steps[{i}].configs"))
            )
        if len({s.name for s in steps}) != len(steps):
            raise ValueError(f"{_where(path, 'demo.steps')} repeats a step name: {[s.name for s in steps]}.")

        quick = section.get("quick", {})
        if not isinstance(quick, Mapping):
            raise ValueError(f"{_where(path, 'quick')} must be an object (config, work_dir).")
        quick_config = quick.get("config")
        if quick_config is not None:
            config_files([quick_config], "quick.config")
        report = str(section.get("report", cls.report))
        if "{system}" not in report:
            raise ValueError(f"{_where(path, 'report')} must contain '{{system}}', got {report!r}.")
        return cls(
            root=root,
            task=task,
            systems=systems,
            demo_systems=demo_systems,
            steps=tuple(steps),
            title=str(demo.get("title", root.name)),
            outputs=str(demo.get("outputs", cls.outputs)),
            report=report,
            quick_config=quick_config,
            quick_work_dir=str(quick.get("work_dir", cls.quick_work_dir)),
            default=section.get("default") is True,
            metadata_file=path,
        )

    def select(self, systems: Sequence[str] | None = None) -> tuple[str, ...]:
        """The systems to run: ``systems`` checked against the bundle's, or its demo's default ones.

        Raises:
            ValueError: for a system the bundle does not have; for one listed before the system it
                starts from; for no system at all.
        """
        chosen = tuple(self.demo_systems if systems is None else systems)
        if not chosen:
            raise ValueError(f"no system to run: name some of {list(self.systems)} ({self.metadata_file}: "
                             f"{METADATA_SECTION}.demo.systems is empty).")  # fmt: skip
        unknown = [s for s in chosen if s not in self.systems]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; the bundle {self.name} has {list(self.systems)}.")
        for i, s in enumerate(chosen):
            start = self.systems[s].starts_from
            if start in chosen[i + 1 :]:
                raise ValueError(f"{s} starts from the {start} model: list {start} before {s}.")
        return chosen

    def work_dir(self, quick: bool = False) -> Path:
        """The folder the bundle's runs write to: the bundle folder, or its quick folder."""
        return self.root / self.quick_work_dir if quick else self.root

    def report_path(self, system: str, quick: bool = False) -> Path:
        """Where ``system``'s report is written."""
        return self.work_dir(quick) / self.report.format(system=system)

    def plan(self, systems: Sequence[str] | None = None, quick: bool = False) -> dict[str, list[DemoRun]]:
        """The demo's runs, per system in training order: each step's config files stacked on the system's.

        Args:
            systems: the systems to run (default: the demo's); see :meth:`select`.
            quick: append the quick config to every run.

        Raises:
            ValueError: for a bad selection (see :meth:`select`), a bundle without demo steps, or
                ``quick`` when the bundle has no quick config.
        """
        chosen = self.select(systems)
        if not self.steps:
            raise ValueError(f"{_where(self.metadata_file, 'demo.steps')} is empty: the bundle has no demo.")
        if quick and self.quick_config is None:
            raise ValueError(f"{_where(self.metadata_file, 'quick.config')} is not set: no quick mode.")
        extra = (self.quick_config,) if quick and self.quick_config is not None else ()
        return {
            s: [DemoRun(s, step.name, self.systems[s].configs + step.configs + extra) for step in self.steps]
            for s in chosen
        }
