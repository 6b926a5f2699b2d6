"""The mechanics every unsupervised adversarial detector shares: fit, calibrate, score, detect, save, load.

A detector is fitted on clean data only. It reads features of chosen layers of the classifier with
forward hooks, in the same forward pass that produces the prediction, and turns them into a score
per item: higher means more likely adversarial. A subclass writes only how one layer's features are
summarised at fit time (:meth:`AdversarialDetector._fit_layer`) and scored
(:meth:`AdversarialDetector._score_layer`); both run in torch, so the score is differentiable with
respect to the input (which an adaptive attack uses).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from monai_adv.detectors.features import FeatureHooks, iterate_loader, resolve_layers, split_batch
from monai_adv.io import atomic_torch_save
from monai_adv.precision import parse_amp, resolve_precision
from monai_adv.utils import default_output_transform, eval_mode, full_precision, network_device, plain_tensor

__all__ = [
    "AdversarialDetector",
    "load_detector",
    "DETECTOR_FILE_FORMAT",
    "network_fingerprint",
    "NetworkMismatchError",
]

DETECTOR_FILE_FORMAT = "monai_adv.detector"
_FILE_VERSION = 2


class NetworkMismatchError(ValueError):
    """A detector bound to (or loaded for) another network than the one it was fitted on."""


def network_fingerprint(network: nn.Module) -> str:
    """SHA-256 of a network's layers and weights: the same for the same architecture and weights only.

    Hashes, in order, every module's name and class, and every entry of the state dict (parameters
    and buffers: name, dtype, shape and the values, on the CPU). A network moved to another device
    keeps its fingerprint; one trained further, re-initialised or of another architecture does not.
    """
    import hashlib

    h = hashlib.sha256()
    for name, module in network.named_modules():
        h.update(f"{name}:{type(module).__name__};".encode())
    for name, t in network.state_dict().items():
        t = t.detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_REGISTRY: dict[str, type[AdversarialDetector]] = {}


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or Inf values.")


def _class_indices(y: torch.Tensor) -> torch.Tensor:
    """Labels as int64 class indices; float labels must be whole numbers (never silently truncated)."""
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            bad = y[~torch.isfinite(y) | (y != y.round())][:5].tolist()
            raise ValueError(
                f"labels must be whole class indices, got fractional or non-finite values {bad} (a float "
                "label is not truncated to a class: pass integer class indices, or soft labels' argmax)."
            )
    return y.long()


class AdversarialDetector:
    """Base class of the unsupervised adversarial detectors.

    Args:
        network: the classifier whose features are read (an ``nn.Module``; hooks are attached to it).
        layers: ``None`` for the penultimate features (the input of the last ``nn.Linear``), or
            module names from ``network.named_modules()`` (``"penultimate"`` may be one of them).
            Convolutional outputs are average-pooled over space. With several layers the score is
            the sum of the per-layer scores, each standardised by its mean and standard deviation
            on the fitting data.
        output_transform: picks the class logits out of the network's output.
        image_key: the image key of dict batches.
        label_key: the label key of dict batches.
        progress: show a progress bar while fitting and calibrating.
        amp: the precision of the detector's own forward pass (:meth:`fit`, :meth:`calibrate`,
            :meth:`score`): False (full precision, the default), True (autocast), or ``"auto"``
            (:func:`~monai_adv.precision.resolve_precision`: bf16 only on a CPU that runs it natively).
            Features are scored in float64/float32 whatever the pass ran in. Inside an evaluator the
            features come from the evaluator's own forward pass, in the evaluator's precision.

    Raises:
        TypeError: when ``network`` is not an ``nn.Module``.
        ValueError: for a layer name that does not exist in the network.
    """

    #: saved constructor options (subclasses extend)
    _config_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] | None = None,
        *,
        output_transform: Callable[[Any], torch.Tensor] = default_output_transform,
        image_key: str = "image",
        label_key: str = "label",
        progress: bool = True,
        amp: bool | str = False,
    ) -> None:
        self.network = network
        self.amp = parse_amp(amp)
        self.layers = resolve_layers(network, layers)
        self.output_transform = output_transform
        self.image_key = image_key
        self.label_key = label_key
        self.progress = progress
        self.num_classes: int | None = None
        self.layer_states: list[dict[str, torch.Tensor]] | None = None
        self.combine_mean: torch.Tensor | None = None
        self.combine_std: torch.Tensor | None = None
        self.threshold: float | None = None
        self.fpr: float | None = None
        self.num_fit_samples: int = 0
        #: :func:`network_fingerprint` of the network at fit time (``None`` before fit, or from an old file)
        self.network_fingerprint: str | None = None
        #: what the classifier's checkpoint records (image size, classes, ...), saved with the detector so
        #: that loading it can be checked against a config; ``None`` when not given
        self.metadata: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------
    # what a subclass writes
    # ------------------------------------------------------------------------------------------
    def _fit_layer(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        """Summarise one layer's clean features ``(N, D)`` (float64) into tensors."""
        raise NotImplementedError

    def _score_layer(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        """Score ``(B, D)`` features of one layer, differentiably; returns ``(B,)``."""
        raise NotImplementedError

    def _fit_scores(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        """Scores of the fitting features themselves, for standardising several layers."""
        return self._score_layer(state, features)

    # ------------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.layer_states is not None

    @property
    def is_calibrated(self) -> bool:
        return self.threshold is not None

    def _require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(clean_loader) before {what}.")

    def _device(self) -> torch.device:
        return network_device(self.network)

    def _states_on(self, device: torch.device, dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
        key = (device, dtype)
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != key:
            states = [
                {
                    k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                    for k, v in s.items()
                }
                for s in self.layer_states or []
            ]
            self._cache = (key, states)
        return self._cache[1]

    # ------------------------------------------------------------------------------------------
    # feature extraction: one forward pass gives the logits and the features
    # ------------------------------------------------------------------------------------------
    def _check_images(self, x: Any) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.as_tensor(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must be a torch tensor or numpy array, got {type(x).__name__}.")
        x = plain_tensor(x)
        if not x.is_floating_point():
            raise TypeError(f"images must be floating point, got {x.dtype}.")
        if x.ndim < 3:
            raise ValueError(f"images must be a batch (B, C, *spatial), got shape {tuple(x.shape)}.")
        if x.shape[0] == 0:
            raise ValueError("images is an empty batch.")
        _check_finite(x, "images")
        return x.to(self._device())

    def predict_and_features(self, x: Any, grad: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the network once; return its logits and the chosen layers' pooled features.

        Args:
            x: a batch ``(B, C, *spatial)``.
            grad: keep the autograd graph (for differentiating the score w.r.t. the input).

        Raises:
            ValueError: for a bad batch, or features with NaN/Inf values.
        """
        x = self._check_images(x)
        p = resolve_precision(self.amp, x.device, channels_last=False)
        with eval_mode(self.network), FeatureHooks(self.network, self.layers, detach=not grad) as hooks:
            grad_mode = torch.enable_grad() if grad else torch.no_grad()
            autocast = torch.autocast(x.device.type, dtype=p.dtype or torch.bfloat16, enabled=p.amp)
            with grad_mode, autocast:
                logits = self.output_transform(self.network(x))
            logits = full_precision(logits)
            features = hooks.collect(x.shape[0])
        for name, f in zip(self.layers, features):
            _check_finite(f.detach(), f"features of layer {name!r}")
        return logits, features

    def score_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The detector score of already captured features (one ``(B, D)`` tensor per layer).

        Differentiable: an adaptive attack back-propagates through it.

        Raises:
            RuntimeError: before :meth:`fit`.
            ValueError: for the wrong number of layers or a feature size that does not match the fit.
        """
        self._require_fitted("scoring")
        # features captured under autocast are bf16/fp16: the Mahalanobis/kNN arithmetic runs in
        # full precision, outside autocast, whatever the forward pass ran in
        features = [full_precision(f) for f in features]
        if features and features[0].device.type in ("cpu", "cuda"):
            with torch.autocast(features[0].device.type, enabled=False):
                return self._score_full_precision(features)
        return self._score_full_precision(features)

    def _score_full_precision(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.layers):
            raise ValueError(
                f"expected features of {len(self.layers)} layers {self.layers}, got {len(features)}."
            )
        states = self._states_on(features[0].device, features[0].dtype)
        total = None
        for i, (f, state) in enumerate(zip(features, states)):
            if f.ndim != 2 or f.shape[1] != state["dim"].item():
                raise ValueError(
                    f"features of layer {self.layers[i]!r} have shape {tuple(f.shape)}, the detector was fitted "
                    f"on {int(state['dim'])} features: is this the same network?"
                )
            s = self._score_layer(state, f)
            if len(self.layers) > 1:
                s = (s - self.combine_mean[i].to(s)) / self.combine_std[i].to(s)
            total = s if total is None else total + s
        return total

    def hooks(self, detach: bool = True) -> FeatureHooks:
        """Forward hooks on this detector's layers, to capture features in someone else's forward pass.

        Example::

            with det.hooks() as hooks:
                logits = inferer(images, network)  # the prediction's own pass
            scores = det.score_hooks(hooks, images.shape[0])
        """
        return FeatureHooks(self.network, self.layers, detach=detach)

    def score_hooks(self, hooks: FeatureHooks, batch_size: int | None = None) -> torch.Tensor:
        """Score the features that ``hooks`` captured in the latest forward pass.

        Raises:
            RuntimeError: before :meth:`fit`, or when a layer captured nothing or another batch size.
            ValueError: for NaN/Inf features.
        """
        self._require_fitted("scoring")
        features = hooks.collect(batch_size)
        for name, f in zip(self.layers, features):
            _check_finite(f.detach(), f"features of layer {name!r}")
        with torch.no_grad() if hooks.detach else torch.enable_grad():
            return self.score_features(features)

    def predict_and_score(self, x: Any, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and detector scores from a single forward pass.

        Args:
            x: a batch ``(B, C, *spatial)``.
            grad: keep the graph so that the scores can be differentiated w.r.t. ``x``.
        """
        self._require_fitted("scoring")
        logits, features = self.predict_and_features(x, grad=grad)
        with torch.enable_grad() if grad else torch.no_grad():
            return logits, self.score_features(features)

    def score(self, x: Any) -> torch.Tensor:
        """Detector score per item ``(B,)``: higher means more likely adversarial.

        Raises:
            RuntimeError: before :meth:`fit`.
            ValueError: for a bad batch (shape, NaN/Inf) or NaN features.
        """
        self._require_fitted("score()")
        return self.predict_and_score(x)[1]

    def detect(self, x: Any) -> torch.Tensor:
        """Boolean flag per item: score above the calibrated threshold.

        Raises:
            RuntimeError: before :meth:`fit` or :meth:`calibrate`.
        """
        self._require_fitted("detect()")
        if not self.is_calibrated:
            raise RuntimeError(
                f"{type(self).__name__} is not calibrated: call calibrate(clean_val_loader, fpr)."
            )
        return self.score(x) > self.threshold

    def flags(self, scores: torch.Tensor) -> torch.Tensor:
        """Flags for already computed scores (requires :meth:`calibrate`)."""
        if not self.is_calibrated:
            raise RuntimeError(
                f"{type(self).__name__} is not calibrated: call calibrate(clean_val_loader, fpr)."
            )
        return scores > self.threshold

    # ------------------------------------------------------------------------------------------
    # fitting and calibration
    # ------------------------------------------------------------------------------------------
    def _stream(
        self, loader: Iterable, desc: str
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
        logits_all, feats_all, labels_all = [], None, []
        n = 0
        try:
            total = len(loader)  # type: ignore[arg-type]
        except TypeError:
            total = None
        for batch in tqdm(
            iterate_loader(loader), desc=desc, total=total, disable=not self.progress, leave=False
        ):
            x, y = split_batch(batch, self.image_key, self.label_key)
            logits, feats = self.predict_and_features(x)
            if feats_all is None:
                feats_all = [[] for _ in feats]
            for store, f in zip(feats_all, feats):
                store.append(f.detach().cpu())
            logits_all.append(logits.detach().cpu())
            labels_all.append(None if y is None else _class_indices(torch.as_tensor(y).reshape(-1)).cpu())
            n += x.shape[0]
        if n == 0:
            raise ValueError(f"the loader given to {desc} is empty: no clean images to {desc} on.")
        return torch.cat(logits_all), [torch.cat(f) for f in feats_all], labels_all

    def fit(self, loader: Iterable, use_labels: bool = True) -> AdversarialDetector:
        """Fit on clean data only.

        Args:
            loader: an iterable of batches (dicts with ``image_key``/``label_key``, ``(images,
                labels)`` tuples, or image tensors), or one image tensor.
            use_labels: use the labels when the batches carry them; otherwise (or when False) the
                network's own predictions stand in for them.

        Returns:
            self.

        Raises:
            ValueError: for an empty loader, NaN/Inf features, labels that do not match the batch
                or lie outside the network's classes.
        """
        logits, features, labels = self._stream(loader, "fit")
        num_classes = logits.shape[1]
        pred = logits.argmax(1)
        if use_labels and all(y is not None for y in labels):
            y = torch.cat(labels)
            if y.shape[0] != pred.shape[0]:
                raise ValueError(f"the loader gave {y.shape[0]} labels for {pred.shape[0]} images.")
            if y.min() < 0 or y.max() >= num_classes:
                raise ValueError(
                    f"labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]."
                )
        else:
            y = pred
        self.num_classes = num_classes
        self.num_fit_samples = int(pred.shape[0])
        states, means, stds = [], [], []
        for name, f in zip(self.layers, features):
            f64 = f.double()
            state = self._fit_layer(f64, y, num_classes)
            state["dim"] = torch.tensor(f.shape[1])
            states.append(state)
            if len(self.layers) > 1:
                s = self._fit_scores(state, f64)
                _check_finite(s, f"fit scores of layer {name!r}")
                means.append(s.mean())
                stds.append(s.std().clamp_min(1e-12))
        self.layer_states = states
        self.network_fingerprint = network_fingerprint(self.network)
        self.combine_mean = torch.stack(means) if means else torch.zeros(1, dtype=torch.float64)
        self.combine_std = torch.stack(stds) if stds else torch.ones(1, dtype=torch.float64)
        self.threshold, self.fpr = None, None
        self._cache = None
        return self

    def score_loader(self, loader: Iterable) -> torch.Tensor:
        """Scores of every image of a loader, concatenated ``(N,)`` on the CPU.

        Raises:
            RuntimeError: before :meth:`fit`.
            ValueError: for an empty loader.
        """
        self._require_fitted("scoring")
        _, features, _ = self._stream(loader, "score")
        with torch.no_grad():
            return self.score_features(features).float()

    def calibrate(self, loader: Iterable, fpr: float = 0.05) -> float:
        """Set the threshold so that at most ``fpr`` of clean validation images are flagged.

        The threshold is the ``1 - fpr`` quantile of the clean scores (the next higher observed
        score), and an image is flagged when its score is strictly above it.

        Args:
            loader: clean validation data, not the data the detector was fitted on.
            fpr: the target false-positive rate, in (0, 1).

        Returns:
            the threshold.

        Raises:
            ValueError: for fpr outside (0, 1) or an empty loader.
            RuntimeError: before :meth:`fit`.
        """
        if not 0.0 < float(fpr) < 1.0:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}.")
        scores = self.score_loader(loader)
        self.threshold = float(torch.quantile(scores.double(), 1.0 - float(fpr), interpolation="higher"))
        self.fpr = float(fpr)
        return self.threshold

    # ------------------------------------------------------------------------------------------
    # save / load (weights_only-safe: tensors, numbers, strings, lists and dicts only)
    # ------------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._config_keys}

    def state_dict(self) -> dict[str, Any]:
        """The detector's state as plain containers of tensors and numbers.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        self._require_fitted("saving")
        return {
            "format": DETECTOR_FILE_FORMAT,
            "version": _FILE_VERSION,
            "class": type(self).__name__,
            "layers": list(self.layers),
            "config": self._config(),
            "num_classes": int(self.num_classes),
            "num_fit_samples": int(self.num_fit_samples),
            "layer_states": [{k: v.detach().cpu() for k, v in s.items()} for s in self.layer_states],
            "combine_mean": self.combine_mean.cpu(),
            "combine_std": self.combine_std.cpu(),
            "threshold": self.threshold,
            "fpr": self.fpr,
            "network_fingerprint": self.network_fingerprint,
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted (and calibrated) state to ``path``, atomically.

        The file loads with ``torch.load(path, weights_only=True)``.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        state = self.state_dict()
        path = os.fspath(path)
        atomic_torch_save(state, path)

    def check_network(self, network: nn.Module | None = None, source: str = "the detector") -> None:
        """Raise :class:`NetworkMismatchError` when ``network`` (default: the bound one) is not the fitted one.

        The detector's statistics describe the features of the exact network it was fitted on; on any
        other network (retrained, another run, another architecture) its scores and flags are
        meaningless. Compares :func:`network_fingerprint` values; a detector without a recorded
        fingerprint (an old file) is not checked.

        Raises:
            NetworkMismatchError: naming both fingerprints.
        """
        if self.network_fingerprint is None:
            return
        actual = network_fingerprint(self.network if network is None else network)
        if actual != self.network_fingerprint:
            raise NetworkMismatchError(
                f"{source} was fitted on network {self.network_fingerprint[:16]} but is given network "
                f"{actual[:16]} (fingerprints of layers and weights): it cannot score another network. Fit the "
                "detector again on this network (fit_detector.json), or load the network it was fitted on."
            )

    @classmethod
    def load(
        cls, path: str | os.PathLike, network: nn.Module, check_network: bool = True, **kwargs: Any
    ) -> AdversarialDetector:
        """Load a detector saved by :meth:`save` and bind it to ``network``.

        Args:
            path: the file.
            network: the classifier the detector was fitted on.
            check_network: refuse a ``network`` whose fingerprint (layers and weights) differs from the
                one the detector was fitted on (:meth:`check_network`).
            kwargs: constructor options that are not saved (``output_transform``, ``progress``, ...).

        Raises:
            ValueError: for an unreadable or foreign file (the message names the path), a file of
                another detector class, or a network whose layers do not match.
            NetworkMismatchError: for another network than the fitted one, naming the file and both
                fingerprints.
        """
        path = os.fspath(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(f"cannot read detector file {path!r}: {e}") from e
        if not isinstance(state, dict) or state.get("format") != DETECTOR_FILE_FORMAT:
            raise ValueError(f"{path!r} is not a monai_adv detector file.")
        if state.get("version", 0) > _FILE_VERSION:
            raise ValueError(
                f"{path!r} was written by a newer monai_adv (format version {state['version']})."
            )
        klass = _REGISTRY.get(state["class"])
        if klass is None:
            raise ValueError(f"{path!r} holds an unknown detector class {state['class']!r}.")
        if cls is not AdversarialDetector and not issubclass(klass, cls):
            raise ValueError(f"{path!r} holds a {state['class']}, not a {cls.__name__}.")
        det = klass(network, layers=state["layers"], **{**state["config"], **kwargs})
        det.num_classes = state["num_classes"]
        det.num_fit_samples = state["num_fit_samples"]
        det.layer_states = state["layer_states"]
        det.combine_mean, det.combine_std = state["combine_mean"], state["combine_std"]
        det.threshold, det.fpr = state["threshold"], state["fpr"]
        det.network_fingerprint = state.get("network_fingerprint")
        det.metadata = state.get("metadata")
        det._cache = None
        if check_network:
            if det.network_fingerprint is None:
                warnings.warn(
                    f"detector file {path!r} records no network fingerprint (an older monai-adv wrote it): "
                    "it cannot be checked against the network; fit it again to record one.",
                    stacklevel=2,
                )
            det.check_network(source=f"detector file {path!r}")
        return det

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        status = "calibrated" if self.is_calibrated else ("fitted" if self.is_fitted else "not fitted")
        return f"{type(self).__name__}(layers={self.layers}{', ' + cfg if cfg else ''}; {status})"


def load_detector(path: str | os.PathLike, network: nn.Module, **kwargs: Any) -> AdversarialDetector:
    """Load any detector saved by :meth:`AdversarialDetector.save` (its class is read from the file)."""
    return AdversarialDetector.load(path, network, **kwargs)
