"""An exact, resumable checkpoint handler for training engines (atomic, verified files; runs kept apart).

A checkpoint is written to a temporary file in the target folder, flushed to disk and moved into
place with ``os.replace``, so a reader (or a resumed run after ``SIGKILL`` or a power cut) sees either
the previous file or the complete new one, never a partial file. Beside each checkpoint a
``<file>.sha256`` holds its SHA-256 (written first), and loading verifies it. Checkpoints load with
``torch.load(..., weights_only=True)``; a corrupt, truncated, altered or non-finite file raises
:class:`CheckpointError` naming it, and resuming never silently starts from scratch when a checkpoint
folder holds files.

Runs are kept apart: each run of :class:`ResumableCheckpointHandler` has a run id, its checkpoints are
``{prefix}_{run_id}_{iteration:09d}.pt``, and ``{prefix}_run.json`` names the folder's current run. A
fresh run never prunes, overwrites or resumes another run's files; a resume continues the current run
and refuses one whose settings (``run_info``: seed, method, ...) differ from its own.

With ``exact=True`` (the default) a checkpoint also holds every random state (torch, numpy, Python,
the attacks' and the augmentations' ``RandomState``), the position in the labeled and unlabeled
loaders, and the best validation score, so that a run killed at any iteration and resumed ends with the
same weights, best model and logged metrics as one that was never interrupted (bit-identical on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_adv.distributed import rank
from monai_adv.engines.rng import RandomStates, find_randomizables
from monai_adv.engines.runs import (
    RUN_ID_PATTERN,
    current_run,
    latest_checkpoint,
    list_checkpoints,
    list_runs,
    new_run_id,
    parse_checkpoint_name,
    run_file,
)
from monai_adv.io import (
    CheckpointError,
    atomic_write_text,
    checksum_path,
    load_checkpoint,
    non_finite_entries,
    remove_stale_temp_files,
    save_checkpoint,
)

__all__ = ["ResumableCheckpointHandler", "TorchRNGState", "NonFiniteLossError", "RESUME_KEY"]

logger = logging.getLogger(__name__)

#: the key of the handler's own resume state inside a checkpoint
RESUME_KEY = "__monai_adv_resume__"


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or weights); the run stopped before saving them."""


class TorchRNGState:
    """Saves and restores torch's global CPU random state (dropout, shuffling) with a checkpoint.

    :class:`ResumableCheckpointHandler` with ``exact=True`` saves every random state itself; this
    remains for checkpoints written by hand.
    """

    def state_dict(self) -> dict:
        return {"torch": torch.get_rng_state()}

    def load_state_dict(self, state: Mapping) -> None:
        torch.set_rng_state(state["torch"])


def _plain(value: Any) -> Any:
    """``run_info`` values as JSON / weights_only-safe plain values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _handlers_of(engine: Engine) -> Iterator[Any]:
    """The handler objects registered on an ignite engine (bound methods' owners, unwrapped)."""
    for entries in getattr(engine, "_event_handlers", {}).values():
        for entry in entries:
            h = entry[0]
            for _ in range(5):
                h = getattr(h, "__wrapped__", h)
            yield getattr(h, "__self__", h)


def _key_metric_savers(validator: Engine) -> list[Any]:
    """MONAI ``CheckpointSaver`` objects of ``validator`` that keep the best model by the key metric."""
    out, seen = [], set()
    for h in _handlers_of(validator):
        ckpt = getattr(h, "_key_metric_checkpoint", None)
        if ckpt is not None and id(h) not in seen and hasattr(ckpt, "state_dict"):
            seen.add(id(h))
            out.append(h)
    return out


class ResumableCheckpointHandler:
    """Checkpoint a training engine atomically every N iterations and at each epoch end; resume exactly.

    Files are ``{save_dir}/{prefix}_{run_id}_{iteration:09d}.pt``, each with a ``.sha256`` beside it,
    holding the state dict of every object in ``save_dict`` (network, optimizer, lr scheduler, the engine
    itself for epoch/iteration, ...); the newest ``n_saved`` **of this run** are kept. Only rank 0
    writes (under ``torch.distributed``); every rank resumes from the same file.

    **Runs.** ``{save_dir}/{prefix}_run.json`` names the folder's current run. A run that does not
    resume (``resume=False``, or nothing to resume) gets a new run id and becomes the current run;
    the files of earlier runs are left as they are (never pruned, overwritten or resumed). With
    ``resume=True`` the handler continues the current run from its newest checkpoint, after checking
    that its ``run_info`` agrees with this one's (a different seed or method is an error naming both),
    and carries on from that iteration (mid-epoch included) to this run's ``max_epochs``.

    **Exact resume** (``exact=True``). Each checkpoint also holds: every random state (torch CPU and
    CUDA, numpy, Python, and the ``RandomState`` of every MONAI ``Randomizable`` reachable from the
    engine: attacks, augmentation transforms of its data loaders; plus ``randomizables``), the random
    states at the start of the epoch, the position in the epoch and in any
    :class:`~monai_adv.engines.CyclingLoader` of the engine (the unlabeled loader), and the best-metric
    state of the validators run by the engine (MONAI ``ValidationHandler``; or ``validators``) and of
    their key-metric ``CheckpointSaver`` (so that the first validation after a resume does not replace
    the best model with a worse one). On resume, the epoch's data order is re-created from the saved
    epoch-start states and the batches already trained on are read and discarded; a run killed at any
    iteration and resumed then ends bit-identical on CPU to an uninterrupted one. The data loaders must
    not use ``persistent_workers``.

    **Non-finite values.** With ``stop_on_nan=True`` a NaN or infinite loss raises
    :class:`NonFiniteLossError` at once (naming the iteration and the last good checkpoint), and a
    checkpoint is never written with non-finite weights; loading refuses a checkpoint with NaN/Inf
    values or one that does not match its checksum.

    Args:
        save_dir: the checkpoint folder (created if missing).
        save_dict: ``{name: object with state_dict/load_state_dict}``; include the engine to resume.
        save_every_iters: also save every this many iterations (None or 0: only at epoch ends).
        n_saved: how many checkpoints of this run to keep (>= 1; None keeps all).
        prefix: file name prefix.
        resume: continue the folder's current run at ``Events.STARTED``.
        map_location: passed to ``torch.load``.
        run_id: this run's id when it starts a new run (default: :func:`new_run_id`); letters, digits
            and ``-``.
        run_info: settings that identify the run (seed, method, data set, ...; plain values), stored
            in the run file and every checkpoint; a resume whose ``run_info`` differs in a shared key
            is refused.
        exact: save and restore what an exact resume needs (see above).
        randomizables: more ``{name: object with a numpy RandomState R}`` to save, beyond those found
            on the engine.
        validators: the evaluators whose best metric to save (default: those of the engine's MONAI
            ``ValidationHandler``).
        stop_on_nan: stop on a non-finite loss and never save non-finite weights.
        checksum: write ``<checkpoint>.sha256`` beside each checkpoint.

    Raises:
        ValueError: for a bad ``save_every_iters``, ``n_saved``, ``prefix`` or ``run_id``, or an empty
            ``save_dict``.

    Example::

        ckpt = ResumableCheckpointHandler("runs/ckpt", {"trainer": trainer, "network": net, "optimizer": opt},
                                          save_every_iters=50, run_info={"seed": 0})
        ckpt.attach(trainer)
        trainer.run()   # resume=True: continues runs/ckpt's current run if it has checkpoints
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_every_iters: int | None = None,
        n_saved: int | None = 2,
        prefix: str = "checkpoint",
        resume: bool = True,
        map_location: Any = "cpu",
        run_id: str | None = None,
        run_info: Mapping[str, Any] | None = None,
        exact: bool = True,
        randomizables: Mapping[str, Any] | None = None,
        validators: Sequence[Engine] | None = None,
        stop_on_nan: bool = True,
        checksum: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to checkpoint.")
        if RESUME_KEY in save_dict:
            raise ValueError(f"{RESUME_KEY!r} is reserved; rename that save_dict entry.")
        if save_every_iters is not None and (
            int(save_every_iters) != save_every_iters or save_every_iters < 0
        ):
            raise ValueError(f"save_every_iters must be an integer >= 0 or None, got {save_every_iters!r}.")
        if n_saved is not None and (int(n_saved) != n_saved or n_saved < 1):
            raise ValueError(f"n_saved must be an integer >= 1 or None, got {n_saved!r}.")
        if (
            not prefix
            or "/" in prefix
            or os.sep in prefix
            or parse_checkpoint_name(f"{prefix}_0.pt", prefix) is None
        ):
            raise ValueError(f"prefix {prefix!r} is not usable in a file name.")
        if run_id is not None and (not RUN_ID_PATTERN.match(str(run_id)) or str(run_id).isdigit()):
            raise ValueError(
                f"run_id {run_id!r} must be 1-64 letters, digits and '-' (not only digits), starting with a "
                "letter or digit."
            )
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_every_iters = int(save_every_iters or 0)
        self.n_saved = n_saved
        self.prefix = prefix
        self.resume = resume
        self.map_location = map_location
        self.requested_run_id = run_id
        self.run_info = _plain(dict(run_info or {}))
        self.exact = bool(exact)
        self.extra_randomizables = dict(randomizables or {})
        self.validators = list(validators) if validators is not None else None
        self.stop_on_nan = bool(stop_on_nan)
        self.checksum = bool(checksum)
        self.run_id: str | None = None
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None
        self._engine: Engine | None = None
        self._states: RandomStates | None = None
        self._epoch_states: dict | None = None
        self._pending: tuple[dict, dict, int] | None = None

    # ------------------------------------------------------------------------------------ wiring
    def attach(self, engine: Engine) -> None:
        """Register run start / resume, exact-resume bookkeeping, the loss check and saving on ``engine``."""
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self._on_started)
        if self.exact:
            engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
            engine.add_event_handler(Events.GET_BATCH_STARTED, self._on_get_batch_started)
        if self.stop_on_nan:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
        if self.save_every_iters:
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(every=self.save_every_iters), self._save_mid_epoch
            )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def _random_states(self, engine: Engine | None) -> RandomStates:
        if self._states is None:
            roots: dict[str, Any] = {}
            if engine is not None:
                for name, value in sorted(vars(engine).items()):
                    if not name.startswith("_") and name not in ("state", "logger", "scaler"):
                        roots[name] = value
            roots.update(self.extra_randomizables)
            self._states = RandomStates(find_randomizables(roots))
        return self._states

    def _cycling_loaders(self, engine: Engine | None) -> dict[str, Any]:
        from monai_adv.engines.batches import CyclingLoader

        if engine is None:
            return {}
        return {k: v for k, v in sorted(vars(engine).items()) if isinstance(v, CyclingLoader)}

    def _validators(self, engine: Engine | None) -> list[Engine]:
        if self.validators is not None:
            return self.validators
        if engine is None:
            return []
        out = []
        for h in _handlers_of(engine):
            v = getattr(h, "validator", None)
            if isinstance(v, Engine) and all(v is not o for o in out):
                out.append(v)
        return out

    # ------------------------------------------------------------------------------------ runs
    def _writerun_file(self) -> None:
        if rank() != 0:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        run = {
            "run_id": self.run_id,
            "run_info": self.run_info,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(run_file(self.save_dir, self.prefix), json.dumps(run, indent=2) + "\n")

    def _start_new_run(self, engine: Engine | None) -> None:
        self.run_id = self.requested_run_id or new_run_id()
        others = {k: v for k, v in list_runs(self.save_dir, self.prefix).items() if k != self.run_id}
        if others and engine is not None:
            n = sum(len(v) for v in others.values())
            engine.logger.info(
                f"new run {self.run_id} in {self.save_dir}: the {n} checkpoint(s) of {len(others)} earlier run(s) "
                "there are kept untouched (delete them when no longer needed)."
            )
        self._writerun_file()

    def _check_run_info(self, saved: Mapping[str, Any], source: Path) -> None:
        diff = {
            k: (saved[k], self.run_info[k])
            for k in sorted(set(saved) & set(self.run_info))
            if _plain(saved[k]) != self.run_info[k]
        }
        if diff:
            shown = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"cannot resume: the current run in {self.save_dir} ({source.name}) has other settings than this "
                f"one ({shown}). Resume with the same settings, or start a new run (resume=false), which leaves "
                "the old run's checkpoints in place."
            )

    def _on_started(self, engine: Engine) -> None:
        if rank() == 0 and self.save_dir.is_dir():
            for p in remove_stale_temp_files(self.save_dir):
                engine.logger.info(f"removed {p}, left by an interrupted write")
        self.resumed_from, self._pending, self._epoch_states = None, None, None
        if self.resume:
            self.load_latest(engine)
        else:
            self._start_new_run(engine)

    def load_latest(self, engine: Engine | None = None) -> Path | None:
        """Continue the folder's current run from its newest checkpoint, if any; returns its path.

        Without a current run (and no checkpoint from an older monai-adv), a new run starts.

        Raises:
            CheckpointError: when the newest checkpoint is unreadable, altered, non-finite or does not fit,
                or the current run's ``run_info`` differs from this one's.
        """
        run = current_run(self.save_dir, self.prefix)
        if run is None:
            legacy = list_checkpoints(self.save_dir, self.prefix, run_id="")
            if not legacy:
                self._start_new_run(engine)
                return None
            self.run_id = ""  # checkpoints of an older monai-adv, named without a run id
        else:
            self.run_id = str(run["run_id"])
            self._check_run_info(run.get("run_info") or {}, run_file(self.save_dir, self.prefix))
        path = latest_checkpoint(self.save_dir, self.prefix, self.run_id)
        if path is None:
            if engine is not None:
                engine.logger.info(f"run {self.run_id} has no checkpoint yet: it starts from the beginning")
            return None
        max_epochs = engine.state.max_epochs if engine is not None else None
        parsed = parse_checkpoint_name(path.name)
        data = load_checkpoint(
            path,
            self.save_dict,
            map_location=self.map_location,
            warn_unverified=bool(parsed and parsed[1]),  # this handler writes a checksum beside every file
        )
        meta = data.get(RESUME_KEY)
        if isinstance(meta, Mapping):
            self._check_run_info(meta.get("run_info") or {}, path)
        if engine is not None and max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise CheckpointError(
                    f"checkpoint {path} is at epoch {engine.state.epoch}, past max_epochs={max_epochs}."
                )
            engine.state.max_epochs = max_epochs
        if self.exact and isinstance(meta, Mapping) and engine is not None:
            self._restore_exact(engine, meta, path)
        self.resumed_from = path
        if engine is not None:
            engine.logger.info(
                f"resumed run {self.run_id or '(unnamed)'} from {path} (iteration {engine.state.iteration}, "
                f"epoch {engine.state.epoch})"
            )
        return path

    # ------------------------------------------------------------------------------ exact resume
    def _restore_exact(self, engine: Engine, meta: Mapping[str, Any], path: Path) -> None:
        try:
            for name, loader in self._cycling_loaders(engine).items():
                if name in meta.get("cycling", {}):
                    loader.load_state_dict(meta["cycling"][name])
            if meta.get("engine_best") is not None:
                for k, v in meta["engine_best"].items():
                    setattr(engine.state, k, v)
            saved_validators = list(meta.get("validators", []))
            for v, vs in zip(self._validators(engine), saved_validators):
                for k, val in vs.get("best", {}).items():
                    setattr(v.state, k, val)
                for saver, ss in zip(_key_metric_savers(v), vs.get("savers", [])):
                    saver._key_metric_checkpoint.load_state_dict(ss)
            states = self._random_states(engine)
            k = int(meta.get("epoch_iteration", 0))
            if k == 0 or meta.get("epoch_rng") is None:
                states.load_state_dict(meta["rng"])
            else:
                self._pending = (meta["epoch_rng"], meta["rng"], k)
        except KeyError as e:
            raise CheckpointError(f"checkpoint {path} cannot resume this run exactly: {e}") from e

    def _on_epoch_started(self, engine: Engine) -> None:
        states = self._random_states(engine)
        if self._pending is not None:
            states.load_state_dict(self._pending[0])  # the interrupted epoch's data order comes again
        self._epoch_states = states.state_dict()

    def _on_get_batch_started(self, engine: Engine) -> None:
        if self._pending is None:
            return
        _, rng, k = self._pending
        self._pending = None
        it = getattr(engine, "_dataloader_iter", None)
        if it is None:
            raise CheckpointError(
                "exact resume needs ignite's Engine._dataloader_iter (ignite 0.4.x / 0.5.x); pass exact=False."
            )
        for _ in range(k):  # the batches this epoch already trained on: read and discarded
            next(it)
        self._random_states(engine).load_state_dict(rng)

    def _resume_state(self, engine: Engine) -> dict[str, Any]:
        epoch_length = engine.state.epoch_length or 0
        k = engine.state.iteration % epoch_length if epoch_length else 0
        state: dict[str, Any] = {"version": 1, "run_id": self.run_id, "run_info": self.run_info}
        if self.exact:
            state["rng"] = self._random_states(engine).state_dict()
            state["epoch_iteration"] = int(k)
            state["epoch_rng"] = self._epoch_states if k else None
            state["cycling"] = {n: c.state_dict() for n, c in self._cycling_loaders(engine).items()}
            state["engine_best"] = {
                a: getattr(engine.state, a)
                for a in ("best_metric", "best_metric_epoch")
                if hasattr(engine.state, a)
            }
            validators = []
            for v in self._validators(engine):
                best = {
                    a: getattr(v.state, a)
                    for a in ("best_metric", "best_metric_epoch")
                    if hasattr(v.state, a)
                }
                savers = [dict(s._key_metric_checkpoint.state_dict()) for s in _key_metric_savers(v)]
                validators.append({"best": _plain(best), "savers": [_plain(s) for s in savers]})
            state["validators"] = validators
        return state

    # ------------------------------------------------------------------------------------ checks
    def check_loss(self, engine: Engine) -> None:
        """Raise :class:`NonFiniteLossError` when the iteration's loss is NaN or infinite."""
        out = engine.state.output
        loss = out.get("loss") if isinstance(out, Mapping) else out
        if isinstance(loss, (list, tuple)) and loss and isinstance(loss[0], Mapping):  # decollated output
            loss = loss[0].get("loss")
        if isinstance(loss, torch.Tensor):
            finite = bool(torch.isfinite(loss.detach()).all())
        elif isinstance(loss, (int, float)):
            finite = math.isfinite(loss)
        else:
            return
        if not finite:
            value = loss.detach().float().reshape(-1)[0].item() if isinstance(loss, torch.Tensor) else loss
            self._stop(
                engine,
                f"the loss is {value} at iteration {engine.state.iteration} (epoch {engine.state.epoch})",
            )

    def _stop(self, engine: Engine, what: str) -> None:
        last = (
            self.last_saved or self.resumed_from or latest_checkpoint(self.save_dir, self.prefix, self.run_id)
        )
        keep = (
            f"the last good checkpoint, {last}, is kept; resume from it (resume=true) after fixing the cause"
            if last is not None
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"training stopped: {what}; nothing was saved from this point on and {keep} (a NaN image, a too high "
            "learning rate, or NaN weights loaded from elsewhere)."
        )

    # ------------------------------------------------------------------------------------ saving
    def _save_mid_epoch(self, engine: Engine) -> None:
        # the last iteration of an epoch is saved at EPOCH_COMPLETED, after the epoch-end handlers
        # (lr schedulers, validation, ...) have run, so that a resumed run does not skip them
        epoch_length = engine.state.epoch_length
        if not epoch_length or engine.state.iteration % epoch_length:
            self.save(engine)

    def save(self, engine: Engine) -> Path | None:
        """Write a checkpoint for the engine's current iteration (rank 0 only) and prune this run's old ones.

        Raises:
            NonFiniteLossError: when a saved object holds NaN or infinite values (nothing is written).
        """
        if self.run_id is None:  # saved without attach/STARTED: a new run
            self._start_new_run(engine)
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        if self.stop_on_nan:
            bad = [p for name in state for p in non_finite_entries(state[name], name)]
            if bad:
                self._stop(
                    engine, f"{bad[:3]} hold NaN or infinite values at iteration {engine.state.iteration}"
                )
        if rank() != 0:
            return None
        state[RESUME_KEY] = self._resume_state(engine)
        run = f"_{self.run_id}" if self.run_id else ""
        path = self.save_dir / f"{self.prefix}{run}_{engine.state.iteration:09d}.pt"
        save_checkpoint(state, path, checksum=self.checksum)
        self.last_saved = path
        if self.n_saved is not None:
            for _, old in list_checkpoints(self.save_dir, self.prefix, self.run_id)[: -self.n_saved]:
                old.unlink(missing_ok=True)
                checksum_path(old).unlink(missing_ok=True)
        return path
