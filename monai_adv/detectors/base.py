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
    "min_variance_weights",
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


def min_variance_weights(z: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Non-negative weights summing to 1 that minimise the variance of ``z @ w`` for standardised scores ``z``.

    ``w = C^-1 1 / (1' C^-1 1)`` for the correlation ``C`` of the columns of ``z`` ``(N, L)`` (a small
    ridge keeps it invertible). Maximising ``sum(w) / sd(z @ w)`` gives the same direction: the most
    detectable combination when an attack raises every layer's standardised score alike. Negative
    weights (a layer whose score would be subtracted) are clipped to 0 and the rest re-solved.
    """
    c = torch.corrcoef(z.T.double()) if z.shape[1] > 1 else torch.ones(1, 1, dtype=torch.float64)
    c = torch.nan_to_num(c, nan=0.0) + ridge * torch.eye(z.shape[1], dtype=torch.float64)
    keep = torch.ones(z.shape[1], dtype=torch.bool)
    w = torch.zeros(z.shape[1], dtype=torch.float64)
    for _ in range(z.shape[1]):
        sub = torch.linalg.solve(c[keep][:, keep], torch.ones(int(keep.sum()), dtype=torch.float64))
        if (sub > 0).all():
            w[keep] = sub / sub.sum()
            return w
        idx = keep.nonzero().squeeze(1)
        keep[idx[sub <= 0]] = False
    w[keep] = 1.0 / max(int(keep.sum()), 1)
    return w


class AdversarialDetector:
    """Base class of the unsupervised adversarial detectors.

    Args:
        network: the classifier whose features are read (an ``nn.Module``; hooks are attached to it).
        layers: ``None`` for the penultimate features (the input of the last ``nn.Linear``), or
            module names from ``network.named_modules()`` (``"penultimate"`` may be one of them).
            Convolutional outputs are average-pooled over space. With several layers the score is
            a weighted sum of the per-layer scores, each standardised by its mean and standard
            deviation on held-out clean data (5-fold cross-fitting on the fitting data, so that a
            layer that overfits its fit samples is not under-weighted).
        layer_weights: how several layers' standardised scores are weighted, from clean data only:
            ``"min_variance"`` (default) weights ``w = C^-1 1`` (clipped at 0, summing to 1) for the
            correlation ``C`` of the layers' clean scores, which maximise ``sum(w) / sd(w . z)``: the
            combination that best separates a shift of every layer's score from clean noise, and does
            not count twice two layers that say the same; ``"equal"`` weights each layer 1.
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
    #: whether scoring needs the network's input batch too (input-consistency tests, input preprocessing)
    needs_input: bool = False

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
        layer_weights: str = "min_variance",
    ) -> None:
        if layer_weights not in ("min_variance", "equal"):
            raise ValueError(f"layer_weights must be 'min_variance' or 'equal', got {layer_weights!r}.")
        self.layer_weights = layer_weights
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
        self.combine_weight: torch.Tensor | None = None
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

    def _observe_inputs(self, x: torch.Tensor) -> None:
        """Called with every clean batch that :meth:`fit` reads (a subclass may record, e.g., its range)."""

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
        hooks = FeatureHooks(
            self.network, self.layers, detach=not grad, output_transform=self.output_transform
        )
        with eval_mode(self.network), hooks:
            grad_mode = torch.enable_grad() if grad else torch.no_grad()
            autocast = torch.autocast(x.device.type, dtype=p.dtype or torch.bfloat16, enabled=p.amp)
            with grad_mode, autocast:
                logits = self.output_transform(self.network(x))
            logits = full_precision(logits)
            features = hooks.collect(x.shape[0])
        for name, f in zip(self.layers, features):
            _check_finite(f.detach(), f"features of layer {name!r}")
        return logits, features

    def score_features(
        self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The detector score of already captured features (one ``(B, D)`` tensor per layer).

        Differentiable: an adaptive attack back-propagates through it.

        Args:
            features: the layers' pooled features of one forward pass.
            inputs: that pass's input batch; required by detectors with ``needs_input`` (they run the
                network again on transformed inputs).

        Raises:
            RuntimeError: before :meth:`fit`.
            ValueError: for the wrong number of layers or a feature size that does not match the fit.
        """
        self._require_fitted("scoring")
        if self.needs_input and inputs is None:
            raise ValueError(f"{type(self).__name__} scores the input batch too: pass inputs=.")
        # features captured under autocast are bf16/fp16: the Mahalanobis/kNN arithmetic runs in
        # full precision, outside autocast, whatever the forward pass ran in
        features = [full_precision(f) for f in features]
        if features and features[0].device.type in ("cpu", "cuda"):
            with torch.autocast(features[0].device.type, enabled=False):
                return self._score(features, inputs)
        return self._score(features, inputs)

    def _score(self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None) -> torch.Tensor:
        """The score of full-precision features (and the input batch, for ``needs_input`` detectors)."""
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
                w = 1.0 if self.combine_weight is None else self.combine_weight[i].to(s)
                s = w * (s - self.combine_mean[i].to(s)) / self.combine_std[i].to(s)
            total = s if total is None else total + s
        return total

    def hooks(self, detach: bool = True) -> FeatureHooks:
        """Forward hooks on this detector's layers, to capture features in someone else's forward pass.

        Example::

            with det.hooks() as hooks:
                logits = inferer(images, network)  # the prediction's own pass
            scores = det.score_hooks(hooks, images.shape[0])
        """
        return FeatureHooks(
            self.network,
            self.layers,
            detach=detach,
            capture_input=self.needs_input,
            output_transform=self.output_transform,
        )

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
        inputs = None
        if self.needs_input:
            inputs = hooks.inputs
            if inputs is None or (batch_size is not None and inputs.shape[0] != batch_size):
                raise RuntimeError(
                    f"{type(self).__name__} scores the network's input too, but the hooks recorded "
                    f"{'none' if inputs is None else f'a batch of {inputs.shape[0]}'}: use det.hooks() for the pass."
                )
        with torch.no_grad() if hooks.detach else torch.enable_grad():
            return self.score_features(features, inputs)

    def predict_and_score(self, x: Any, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and detector scores from a single forward pass.

        Args:
            x: a batch ``(B, C, *spatial)``.
            grad: keep the graph so that the scores can be differentiated w.r.t. ``x``.
        """
        self._require_fitted("scoring")
        x = self._check_images(x)
        logits, features = self.predict_and_features(x, grad=grad)
        with torch.enable_grad() if grad else torch.no_grad():
            return logits, self.score_features(features, x if self.needs_input else None)

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
            x = self._check_images(x)
            self._observe_inputs(x)
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
        states = []
        for f in features:
            state = self._fit_layer(f.double(), y, num_classes)
            state["dim"] = torch.tensor(f.shape[1])
            states.append(state)
        self.layer_states = states
        self._cache = None
        if len(self.layers) > 1:
            self._fit_combination([f.double() for f in features], y, num_classes)
        else:
            self.combine_mean = torch.zeros(1, dtype=torch.float64)
            self.combine_std = torch.ones(1, dtype=torch.float64)
            self.combine_weight = torch.ones(1, dtype=torch.float64)
        self.network_fingerprint = network_fingerprint(self.network)
        self.threshold, self.fpr = None, None
        return self

    def _held_out_layer_scores(
        self, features: list[torch.Tensor], labels: torch.Tensor, num_classes: int, folds: int = 5
    ) -> torch.Tensor:
        """``(N, L)`` clean scores of every fit sample by each layer, from a fit without that sample's fold.

        In-sample scores flatter a layer whose statistics overfit its fit samples (a Mahalanobis
        distance in many dimensions); cross-fitting scores each sample as new data would be scored.
        With fewer than ``2 * folds`` samples the in-sample scores (:meth:`_fit_scores`) are used.
        """
        n = labels.shape[0]
        out = torch.zeros(n, len(features), dtype=torch.float64)
        if n < 2 * folds:
            for j, f in enumerate(features):
                out[:, j] = self._fit_scores(self.layer_states[j], f).double()
            return out
        # random folds: a loader sorted (or interleaved) by class must not leave a class out of a fold's fit
        fold = torch.randperm(n, generator=torch.Generator().manual_seed(0)) % folds
        for k in range(folds):
            train, test = fold != k, fold == k
            for j, f in enumerate(features):
                try:
                    state = self._fit_layer(f[train], labels[train], num_classes)
                except ValueError:  # a fold too small for this layer's statistics: use the in-sample scores
                    state = self.layer_states[j]
                out[test, j] = self._score_layer(state, f[test]).double()
        return out

    def _fit_combination(self, features: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> None:
        """Per-layer standardisation and weights of several layers' scores, from clean data only."""
        with torch.no_grad():
            scores = self._held_out_layer_scores(features, labels, num_classes)
        for j, name in enumerate(self.layers):
            _check_finite(scores[:, j], f"fit scores of layer {name!r}")
        self.combine_mean = scores.mean(0)
        self.combine_std = scores.std(0).clamp_min(1e-12)
        self.combine_weight = torch.ones(len(self.layers), dtype=torch.float64)
        if self.layer_weights == "min_variance":
            self.combine_weight = min_variance_weights((scores - self.combine_mean) / self.combine_std)

    def score_loader(self, loader: Iterable) -> torch.Tensor:
        """Scores of every image of a loader, concatenated ``(N,)`` on the CPU.

        Raises:
            RuntimeError: before :meth:`fit`.
            ValueError: for an empty loader.
        """
        self._require_fitted("scoring")
        out = []
        for batch in tqdm(iterate_loader(loader), desc="score", disable=not self.progress, leave=False):
            x, _ = split_batch(batch, self.image_key, self.label_key)
            out.append(self.score(x).detach().float().cpu())
        if not out:
            raise ValueError("the loader given to score is empty: no clean images to score.")
        return torch.cat(out)

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
        return {k: getattr(self, k) for k in ("layer_weights", *self._config_keys)}

    def state_dict(self) -> dict[str, Any]:
        """The detector's state as plain containers of tensors and numbers.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        self._require_fitted("saving")
        return {
            **self._state_header(),
            "layer_states": [{k: v.detach().cpu() for k, v in s.items()} for s in self.layer_states],
            "combine_mean": self.combine_mean.cpu(),
            "combine_std": self.combine_std.cpu(),
            "combine_weight": None if self.combine_weight is None else self.combine_weight.cpu(),
        }

    def _state_header(self) -> dict[str, Any]:
        """The saved entries every detector has (the counterpart of :meth:`_restore_common`)."""
        return {
            "format": DETECTOR_FILE_FORMAT,
            "version": _FILE_VERSION,
            "class": type(self).__name__,
            "layers": list(self.layers),
            "config": self._config(),
            "num_classes": int(self.num_classes),
            "num_fit_samples": int(self.num_fit_samples),
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
        det = klass._from_state(state, network, **kwargs)
        if check_network:
            if det.network_fingerprint is None:
                warnings.warn(
                    f"detector file {path!r} records no network fingerprint (an older monai-adv wrote it): "
                    "it cannot be checked against the network; fit it again to record one.",
                    stacklevel=2,
                )
            det.check_network(source=f"detector file {path!r}")
        return det

    @classmethod
    def _from_state(cls, state: dict[str, Any], network: nn.Module, **kwargs: Any) -> AdversarialDetector:
        """A detector of this class bound to ``network`` with the saved ``state`` (see :meth:`state_dict`)."""
        det = cls(network, layers=state["layers"], **{**state["config"], **kwargs})
        det.layer_states = state["layer_states"]
        det.combine_mean, det.combine_std = state["combine_mean"], state["combine_std"]
        det.combine_weight = state.get("combine_weight")
        det._cache = None
        return det._restore_common(state)

    def _restore_common(self, state: dict[str, Any]) -> AdversarialDetector:
        """The saved entries every detector has: classes, fit size, threshold, FPR, fingerprint, metadata."""
        self.num_classes = state["num_classes"]
        self.num_fit_samples = state["num_fit_samples"]
        self.threshold, self.fpr = state["threshold"], state["fpr"]
        self.network_fingerprint = state.get("network_fingerprint")
        self.metadata = state.get("metadata")
        return self

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        status = "calibrated" if self.is_calibrated else ("fitted" if self.is_fitted else "not fitted")
        return f"{type(self).__name__}(layers={self.layers}{', ' + cfg if cfg else ''}; {status})"


def load_detector(path: str | os.PathLike, network: nn.Module, **kwargs: Any) -> AdversarialDetector:
    """Load any detector saved by :meth:`AdversarialDetector.save` (its class is read from the file)."""
    return AdversarialDetector.load(path, network, **kwargs)
