"""Read a MONAI bundle we have never seen: its configs, its engines, its weights, its intensity preprocessing and
what its network outputs.

Everything here works from the bundle's own files and MONAI's object model (``ConfigParser``, engines,
``CheckpointLoader``, ``Compose``), never from a bundle's name or a fixed key layout: the model zoo has several
conventions (``evaluator`` or ``validate#evaluator``, ``ckpt_path`` or ``ckpt_dir``, JSON or YAML, ...), and the
functions below find what they need by type. :mod:`monai_adv.bundle.audit` and :mod:`monai_adv.bundle.harden`
build on them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_adv.bundle.errors import BundleInputError

__all__ = [
    "CONFIG_SUFFIXES",
    "find_config",
    "default_config_files",
    "parse_overrides",
    "load_bundle_config",
    "walk_config",
    "target_class",
    "engine_ids",
    "flatten_transforms",
    "run_target_id",
    "bundle_metadata",
    "class_names_from_metadata",
    "IntensityMap",
    "intensity_map",
    "output_activation",
    "checkpoint_loaders",
    "engine_postprocessing",
    "load_evaluator_weights",
    "engine_ids_of_type",
    "first_batch",
    "network_output",
]

#: the config file suffixes MONAI's ``ConfigParser`` reads
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def find_config(bundle_dir: str | os.PathLike, stem: str) -> Path | None:
    """``configs/<stem>.json`` (or ``.yaml``/``.yml``) of a bundle, or None."""
    for suffix in CONFIG_SUFFIXES:
        path = Path(bundle_dir) / "configs" / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _read(path: Path) -> dict:
    from monai.bundle import ConfigParser

    content = ConfigParser.load_config_file(str(path))
    return dict(content) if isinstance(content, Mapping) else {}


def _defines_network(path: Path) -> bool:
    return "network_def" in _read(path) or "network" in _read(path)


def default_config_files(bundle_dir: str | os.PathLike, label_free: bool = False) -> list[Path]:
    """The configs that evaluate a bundle's model on labelled data, as the model zoo lays them out.

    In order of preference: ``evaluate`` stacked on ``train`` when it is a mixin (it defines no network,
    as in the zoo's classification template and spleen bundle), a standalone ``evaluate`` or ``test``,
    ``train`` (its validation section), and last ``inference`` (the only choice with ``label_free``
    when nothing labelled exists, and the first choice with it, since deployment data has no labels).

    Raises:
        BundleInputError: when the bundle has none of these configs.
    """
    root = Path(bundle_dir)
    train, inference = find_config(root, "train"), find_config(root, "inference")
    if label_free and inference is not None:
        return [inference]
    for stem in ("evaluate", "test"):
        path = find_config(root, stem)
        if path is None:
            continue
        if _defines_network(path):
            return [path]
        if train is not None:
            return [train, path]
    if train is not None:
        return [train]
    if inference is not None:
        return [inference]
    raise BundleInputError(
        f"{str(root)!r} has no configs/evaluate, test, train or inference config (.json/.yaml): "
        "pass the configs to use with --config."
    )


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--KEY", "VALUE", ...]`` (or ``--KEY=VALUE``) as ``{KEY: value}``, values parsed as ``python -m monai.bundle
    run`` parses them (with ``fire``: ``0``, ``False``, ``[64,64,64]``; ``false`` stays a string). MONAI's ``#``
    separates nested ids.

    Raises:
        BundleInputError: for an argument that is not ``--KEY`` or a ``--KEY`` without a value.
    """
    from fire.parser import DefaultParseValue

    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise BundleInputError(
                f"unexpected argument {arg!r}: config overrides are --KEY VALUE (e.g. --train#dataloader#num_workers 0)."
            )
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise BundleInputError(f"the config override --{key} has no value: write --{key} VALUE.")
            value = items[i + 1]
            i += 1
        out[key] = DefaultParseValue(value)
        i += 1
    return out


def load_bundle_config(
    bundle_dir: str | os.PathLike,
    config_files: Sequence[str | os.PathLike],
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """A ``ConfigParser`` over ``config_files`` (stacked in order, as ``monai.bundle run`` does), with
    ``bundle_root`` set to the bundle folder and ``overrides`` applied; nothing is instantiated yet.

    Args:
        bundle_dir: the bundle folder.
        config_files: config paths, absolute or relative to ``bundle_dir``.
        overrides: ``{config id: value}`` (``#`` for nested ids).

    Raises:
        BundleInputError: for a missing config file, or an override of an id whose parent does not exist.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir).resolve()
    files = []
    for f in config_files:
        path = Path(f) if Path(f).is_absolute() else root / f
        if not path.is_file() and (root / "configs" / Path(f).name).is_file():
            path = root / "configs" / Path(f).name
        if not path.is_file():
            raise BundleInputError(f"config file {str(path)!r} does not exist.")
        files.append(str(path))
    parser = ConfigParser()
    parser.read_config(files)
    metadata = root / "configs" / "metadata.json"
    if metadata.is_file():
        parser.read_meta(str(metadata))
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        try:
            parser[key] = value
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise BundleInputError(
                f"cannot set the config override --{key}: its parent id is not in the configs ({e})."
            ) from e
    return parser


def walk_config(node: Any, path: str = ""):
    """``(id, item)`` for every dict item of a raw config (``ConfigParser.get()``), depth first; keys starting
    with ``_`` (``_target_``, ``_disabled_``, ...) are not descended into."""
    if isinstance(node, Mapping):
        if path:
            yield path, node
        for key, value in node.items():
            if not str(key).startswith("_"):
                yield from walk_config(value, f"{path}#{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_config(value, f"{path}#{i}" if path else str(i))


_LOCATOR: Any = None


def target_class(item: Mapping, item_id: str = "") -> Any:
    """The class (or function) an item's ``_target_`` names, resolved as MONAI's config parser resolves it (a
    dotted path, or a short name such as ``SupervisedTrainer`` found by MONAI's ``ComponentLocator``, whose
    scan of MONAI's modules is done once and shared); None when it cannot be resolved."""
    global _LOCATOR
    from monai.bundle import ComponentLocator, ConfigComponent
    from monai.utils import optional_import

    target = item.get("_target_")
    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        return None
    name = target
    if "." not in target:
        import monai.engines

        found = getattr(monai.engines, target, None)  # MONAI's engines, without the locator's scan
        if found is not None:
            return found
        if _LOCATOR is None:
            _LOCATOR = ComponentLocator()
        try:
            name = ConfigComponent(config=dict(item), id=item_id, locator=_LOCATOR).resolve_module_name()
        except Exception:  # an unresolvable target is not an engine to find
            return None
        if not isinstance(name, str):
            return name
    module, _, attr = name.rpartition(".")
    obj, ok = optional_import(module, name=attr) if module else (None, False)
    return obj if ok else None


def engine_ids(parser: Any, base: type) -> list[str]:
    """The ids of the (enabled) config items that instantiate a subclass of ``base`` (e.g. MONAI's ``Evaluator``
    or ``SupervisedTrainer``), found by their ``_target_`` whatever the key layout (``evaluator``,
    ``validate#evaluator``, ``train#trainer``, ...).

    Args:
        parser: a ``ConfigParser``, or the merged raw config (``ConfigParser.get()``).
        base: the class the items must instantiate.
    """
    import inspect

    config = parser.get() if hasattr(parser, "get_parsed_content") else parser
    found = []
    for item_id, item in walk_config(config):
        if "_target_" not in item or item.get("_disabled_") in (True, "true", "True"):
            continue
        cls = target_class(item, item_id)
        if inspect.isclass(cls) and issubclass(cls, base):
            found.append(item_id)
    return found


def run_target_id(parser: Any, candidates: Sequence[str]) -> str | None:
    """Which of ``candidates`` the config's ``run`` expressions run (``$@validate#evaluator.run()``), if any."""
    run = parser.get("run", [])
    text = " ".join(run) if isinstance(run, list) else str(run)
    for cid in candidates:
        if re.search(r"@" + re.escape(cid) + r"\.run\(", text):
            return cid
    return None


def bundle_metadata(bundle_dir: str | os.PathLike) -> dict:
    """The bundle's ``configs/metadata.json`` (empty when missing or unreadable)."""
    path = Path(bundle_dir) / "configs" / "metadata.json"
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _output_spec(metadata: Mapping) -> Mapping:
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    return next(iter(outputs.values()), {}) if isinstance(outputs, Mapping) and outputs else {}


def class_names_from_metadata(metadata: Mapping, num_classes: int) -> list[str]:
    """Class names from the model zoo's ``network_data_format.outputs.<key>.channel_def`` when it names
    ``num_classes`` channels, else ``"0"``, ``"1"``, ..."""
    channel_def = _output_spec(metadata).get("channel_def")
    if isinstance(channel_def, Mapping) and len(channel_def) == num_classes:
        try:
            return [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
        except (ValueError, TypeError):
            pass
    return [str(i) for i in range(num_classes)]


@dataclass(frozen=True)
class IntensityMap:
    """The affine map from the image's original intensities to the network's input: ``x_net = scale * x + shift``."""

    #: network units per original unit, or None when the preprocessing holds no invertible map with fixed
    #: parameters (eps then stays in network-input units)
    scale: float | None
    #: the original units' name: ``"HU"`` for CT, else ``"original intensity units"``
    original_units: str
    #: the network input's bounds ``(low, high)`` that the preprocessing guarantees (a clipping
    #: ``ScaleIntensityRanged``, a min-max ``ScaleIntensityd``), or None (unbounded)
    value_range: tuple[float, float] | None
    #: what the map was read from (or why there is none), for the report
    description: str

    def to_network(self, eps_original: float) -> float:
        """eps in network-input units for ``eps_original`` in original units.

        Raises:
            BundleInputError: when there is no invertible map.
        """
        if self.scale is None:
            raise BundleInputError(
                f"eps cannot be given in original units: {self.description}; give --eps in network-input units."
            )
        return float(eps_original) * abs(self.scale)

    def to_original(self, eps: float) -> float | None:
        """eps in original units for ``eps`` in network-input units (None without a map)."""
        return None if self.scale in (None, 0) else float(eps) / abs(self.scale)


def _keys_of(transform: Any) -> tuple:
    keys = getattr(transform, "keys", None)
    return tuple(keys) if isinstance(keys, (list, tuple)) else ((keys,) if keys is not None else ())


def flatten_transforms(transform: Any) -> list:
    """The transforms of a chain in order (a ``Compose``, nested ones included, a list, or one transform)."""
    from monai.transforms import Compose

    if isinstance(transform, Compose):
        return list(transform.flatten().transforms)
    if isinstance(transform, (list, tuple)):
        return [t for item in transform for t in flatten_transforms(item)]
    return [] if transform is None else [transform]


def intensity_map(preprocessing: Any, image_key: str = "image", modality: str | None = None) -> IntensityMap:
    """Read the affine intensity map, and the bounds it guarantees, from a bundle's preprocessing.

    Understood, in order of application to ``image_key``: ``ScaleIntensityRange(d)`` (a fixed window:
    ``scale = (b_max - b_min) / (a_max - a_min)``, bounds ``[b_min, b_max]`` when clipping),
    ``NormalizeIntensity(d)`` with a fixed ``subtrahend`` and ``divisor`` (scalars), ``ScaleIntensity(d)``
    with ``factor`` (``x * (1 + factor)``). A min-max ``ScaleIntensity(d)``, a ``ScaleIntensityRangePercentiles(d)``
    or a ``NormalizeIntensity(d)`` on each image's own statistics scales each image differently, and any other
    intensity transform (noise, bias field, ``Lambda``) is not a fixed affine map: after them eps stays in
    network units (the map says why). The bounds are the last bounding transform's (a min-max scaling, a
    clipping window), unless an intensity transform after it moves the values again.

    Args:
        preprocessing: a MONAI ``Compose`` (or a list of transforms, or one transform).
        image_key: the image's key in dictionary transforms.
        modality: the bundle's modality (metadata); ``"CT"`` names the units HU.
    """
    units = "HU" if (modality or "").upper() == "CT" else "original intensity units"
    scale: float = 1.0
    value_range: tuple[float, float] | None = None
    steps: list[str] = []
    unknown: str | None = None  # why there is no fixed map, once one transform breaks it
    for t in flatten_transforms(preprocessing):
        name = type(t).__name__
        keys = _keys_of(t)
        if keys and image_key not in keys:
            continue
        core = getattr(t, "scaler", None) or getattr(t, "normalizer", None) or t
        cname = type(core).__name__
        if cname == "ScaleIntensityRange":
            a_min, a_max, b_min, b_max = (core.a_min, core.a_max, core.b_min, core.b_max)
            if b_min is None or b_max is None or a_max == a_min:
                unknown, value_range = f"{name} without a fixed output range", None
                continue
            scale *= (b_max - b_min) / (a_max - a_min)
            value_range = (float(min(b_min, b_max)), float(max(b_min, b_max))) if core.clip else None
            steps.append(f"{name}([{a_min:g}, {a_max:g}] -> [{b_min:g}, {b_max:g}])")
        elif cname == "NormalizeIntensity":
            sub, div = core.subtrahend, core.divisor
            fixed = (
                sub is not None
                and div is not None
                and all(
                    isinstance(v, (int, float)) or (hasattr(v, "numel") and v.numel() == 1)
                    for v in (sub, div)
                )
            )
            value_range = None
            if not fixed:
                unknown = f"{name} uses each image's own mean and std (no fixed statistics)"
                continue
            scale /= float(div)
            steps.append(f"{name}(subtrahend {float(sub):g}, divisor {float(div):g})")
        elif cname == "ScaleIntensity" and core.factor is not None:
            scale *= 1.0 + float(core.factor)
            value_range = None
            steps.append(f"{name}(factor {float(core.factor):g})")
        elif cname == "ScaleIntensity" and core.minv is not None and core.maxv is not None:
            unknown = f"{name} scales each image by its own range"
            value_range = (float(min(core.minv, core.maxv)), float(max(core.minv, core.maxv)))
        elif cname == "ScaleIntensityRangePercentiles":
            unknown = f"{name} scales each image by its own percentiles"
            clips = core.clip and core.b_min is not None and core.b_max is not None
            value_range = (
                (float(min(core.b_min, core.b_max)), float(max(core.b_min, core.b_max))) if clips else None
            )
        elif type(t).__module__.startswith("monai.transforms.intensity") or cname in ("Lambda", "Lambdad"):
            # noise, bias fields, histogram changes, ...: not a fixed affine map, and no earlier bound survives
            unknown, value_range = f"{name} changes intensities in a way that is not a fixed affine map", None
    if unknown is not None:
        return IntensityMap(None, units, value_range, unknown)
    if not steps:
        return IntensityMap(
            None,
            units,
            None,
            "no invertible intensity transform (ScaleIntensityRange, NormalizeIntensity with fixed "
            "statistics, ScaleIntensity with a factor) in the preprocessing",
        )
    if not math.isfinite(scale) or scale == 0:
        return IntensityMap(None, units, None, "a degenerate intensity map (" + ", ".join(steps) + ")")
    return IntensityMap(scale, units, value_range, ", ".join(steps))


def output_activation(postprocessing: Any, num_outputs: int) -> str:
    """``"sigmoid"`` or ``"softmax"``: what the bundle's postprocessing applies to the network output.

    Read from ``Activations(d)`` (``sigmoid=True`` / ``softmax=True``) and ``AsDiscrete(d)`` (a
    ``threshold`` means independent per-channel outputs, ``argmax`` exclusive classes); without either,
    one output channel means sigmoid, more mean softmax.
    """

    def on(value: Any) -> bool:
        values = value if isinstance(value, (list, tuple)) else [value]
        return any(v is not None and v is not False for v in values)

    for t in flatten_transforms(postprocessing) if postprocessing is not None else []:
        # dictionary versions keep the per-key arguments on themselves, array versions on the transform
        name = type(t).__name__.rstrip("d").rstrip("D")
        if name == "Activations":
            if on(getattr(t, "sigmoid", None)):
                return "sigmoid"
            if on(getattr(t, "softmax", None)):
                return "softmax"
        if name == "AsDiscrete":
            kwargs = getattr(t, "kwargs", None) or {}
            if on(getattr(t, "threshold", None)) or on(kwargs.get("threshold")):
                return "sigmoid"
            if on(getattr(t, "argmax", None)) or on(kwargs.get("argmax")):
                return "softmax"
    return "sigmoid" if num_outputs == 1 else "softmax"


def engine_postprocessing(engine: Any, parser: Any | None = None, engine_id: str | None = None) -> Any:
    """The ``postprocessing`` a MONAI engine was built with (MONAI keeps it only inside an event handler).

    From the config when the parser and the engine's id are given, else from the engine's registered
    postprocessing handler; None when there is none.
    """
    if parser is not None and engine_id is not None and f"{engine_id}#postprocessing" in parser:
        try:
            return parser.get_parsed_content(f"{engine_id}#postprocessing")
        except Exception:  # fall back to the engine's own handler
            pass
    from monai.engines.utils import IterationEvents

    for handler, _, _ in engine._event_handlers.get(IterationEvents.MODEL_COMPLETED, []):
        if getattr(handler, "__name__", "") == "_run_postprocessing":
            for cell in handler.__closure__ or ():
                if callable(cell.cell_contents):
                    return cell.cell_contents
    return None


def checkpoint_loaders(engine: Any) -> list:
    """The MONAI ``CheckpointLoader`` handlers attached to ``engine``."""
    from ignite.engine import Events
    from monai.handlers import CheckpointLoader

    found = []
    for handler, _, _ in engine._event_handlers.get(Events.STARTED, []):
        target = getattr(handler, "__self__", handler)
        if isinstance(target, CheckpointLoader) and target not in found:
            found.append(target)
    return found


def _network_expression_loads(parser: Any, evaluator_id: str | None) -> str | None:
    """The network's config expression when it loads weights itself (``$load_weights(@network_def, ...)``)."""
    if evaluator_id is None:
        return None
    seen, ref = 0, parser.get(f"{evaluator_id}#network")
    while isinstance(ref, str) and ref.startswith("@") and seen < 8:  # follow @network -> @net -> "$..."
        ref, seen = parser.get(ref[1:]), seen + 1
    if (
        isinstance(ref, str)
        and ref.startswith("$")
        and re.search(r"load(_weights|_state_dict|_checkpoint)?\(", ref)
    ):
        for key in re.findall(r"@([\w#]+)", ref):  # name the checkpoint file the expression reads
            try:
                value = parser.get_parsed_content(key) if isinstance(parser.get(key), str) else None
            except Exception:  # a reference that cannot be resolved alone is not the file
                value = None
            if isinstance(value, str) and value.endswith((".pt", ".pth", ".ckpt", ".ts")):
                return value
        return f"the network's config expression {ref[1:].strip()!r}"
    return None


def load_evaluator_weights(
    engine: Any, parser: Any | None = None, weights: str | None = None, evaluator_id: str | None = None
) -> str:
    """Load the bundle's weights into ``engine.network`` and say where they came from.

    In order: an explicit ``weights`` file; the ``CheckpointLoader`` handlers attached to the engine
    (model-zoo evaluation configs attach one, disabled when its file is missing); a network whose config
    expression loads its weights (``$load_weights(@network_def, @model_file)``); a ``CheckpointLoader``
    that the config's ``initialize`` already ran (``load_pretrain``, as in the zoo's inference configs).

    Args:
        engine: the bundle's evaluator, instantiated (``initialize`` already run).
        parser: its ``ConfigParser``, to find the loaders and checkpoint keys an ``initialize`` used.
        evaluator_id: the evaluator's config id, to see whether its network's expression loads weights itself.
        weights: a checkpoint file to load instead (a state dict or a dict with a ``"model"`` entry).

    Returns:
        a description of the weights (the file path).

    Raises:
        BundleInputError: when no weights are found, naming the keys to set.
    """
    from monai_adv.bundle.components import load_weights

    if weights is not None:
        load_weights(engine.network, weights)
        return str(weights)
    loaders = checkpoint_loaders(engine)
    expression = _network_expression_loads(parser, evaluator_id) if parser is not None else None
    if expression is not None and not loaders:
        return expression
    if loaders:
        for loader in loaders:
            loader(engine)
        return ", ".join(str(getattr(loader, "load_path", "?")) for loader in loaders)
    if parser is not None:
        initialize = parser.get("initialize", [])
        text = " ".join(initialize) if isinstance(initialize, list) else str(initialize)
        for item_id in engine_ids_of_type(parser, "CheckpointLoader"):
            if re.search(r"@" + re.escape(item_id) + r"\b", text):
                load_pretrain = parser.get("load_pretrain", True)
                if load_pretrain is False:
                    break
                return str(parser.get_parsed_content(f"{item_id}#load_path"))
    hints = []
    if parser is not None:
        for key in ("ckpt_path", "ckpt_dir", "ckpt", "model_path"):
            if key in parser:
                try:
                    hints.append(f"{key} = {parser.get_parsed_content(key)!r}")
                except Exception:  # an unresolvable key is only a hint
                    hints.append(key)
    where = f" (the configs have {', '.join(hints)}: does the file exist?)" if hints else ""
    if parser is None:
        raise BundleInputError(
            "no weights found: no CheckpointLoader is attached to the evaluator (a loader that the config's "
            "initialize runs is not visible to the overlay): set --robustness#weights PATH/model.pt."
        )
    raise BundleInputError(
        f"no weights found for the network{where}: set the checkpoint key (e.g. --ckpt_path "
        "PATH/model.pt, --ckpt_dir DIR, --load_pretrain True) or pass --weights FILE."
    )


def engine_ids_of_type(parser: Any, class_name: str) -> list[str]:
    """Ids of config items whose ``_target_`` ends with ``class_name`` (no import needed)."""
    return [
        item_id
        for item_id, item in walk_config(parser.get())
        if str(item.get("_target_", "")).split(".")[-1] == class_name and item.get("_disabled_") is not True
    ]


def first_batch(loader: Any) -> Any:
    """The first batch of a data loader, with a clear error for an empty one."""
    try:
        return next(iter(loader))
    except StopIteration:
        raise BundleInputError(
            "the evaluation data is empty: check --dataset_dir / the datalist keys of the config."
        ) from None


def network_output(engine: Any, inputs: torch.Tensor) -> torch.Tensor:
    """The logits of ``engine.network`` for ``inputs`` through the engine's inferer (no grad, eval mode)."""
    from monai_adv.transforms.base import default_output_transform

    network = engine.network
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = engine.inferer(inputs, network)
    finally:
        network.train(was_training)
    return default_output_transform(out)
