"""Adversarial training engines: SSAT (semi-supervised), Madry PGD-AT, TRADES and RST, the registered training
methods, and the runs of their checkpoints (the resumable checkpoint handler is in :mod:`monai_adv.handlers`,
the verified checkpoint files in :mod:`monai_adv.io`)."""

from monai_adv.distributed import unwrap_network
from monai_adv.engines.batches import CyclingLoader
from monai_adv.engines.evaluator import RobustEvaluator, RobustSegmentationEvaluator
from monai_adv.engines.methods import (
    SSAT_EPS_RANGE,
    TRAINING_METHODS,
    TrainingMethod,
    create_trainer,
    register_training_method,
    training_method,
)
from monai_adv.engines.outputs import adversarial_training_metrics, training_stats
from monai_adv.engines.precision import (
    attack_in_engine_precision,
    configure_engine_amp,
    engine_autocast,
    resolve_amp_kwargs,
)
from monai_adv.engines.presets import PRESETS, TrainingPreset
from monai_adv.engines.pseudo_labels import (
    MeanTeacherPseudoLabeller,
    OnlinePseudoLabeller,
    PseudoLabelAccuracy,
    PseudoLabeller,
    TeacherPseudoLabeller,
    UnlabeledWeightSchedule,
    make_pseudo_labeller,
)
from monai_adv.engines.rng import RandomStates, find_randomizables
from monai_adv.engines.rst import PseudoLabeledLoader, RobustSelfTrainingTrainer, load_teacher, pseudo_label
from monai_adv.engines.runs import current_run, latest_checkpoint, list_checkpoints, list_runs, new_run_id
from monai_adv.engines.schedules import one_cycle_schedule
from monai_adv.engines.trainers import (
    AdversarialTrainingEvents,
    AutocastSupervisedTrainer,
    MadryAdversarialTrainer,
    SemiSupervisedAdversarialTrainer,
    SupervisedAdversarialTrainer,
    TradesAdversarialTrainer,
)
from monai_adv.keys import AdvTrainingKeys

__all__ = [
    "PseudoLabeller",
    "OnlinePseudoLabeller",
    "TeacherPseudoLabeller",
    "MeanTeacherPseudoLabeller",
    "make_pseudo_labeller",
    "UnlabeledWeightSchedule",
    "PseudoLabelAccuracy",
    "RobustEvaluator",
    "RobustSegmentationEvaluator",
    "SemiSupervisedAdversarialTrainer",
    "SupervisedAdversarialTrainer",
    "MadryAdversarialTrainer",
    "TradesAdversarialTrainer",
    "RobustSelfTrainingTrainer",
    "pseudo_label",
    "PseudoLabeledLoader",
    "load_teacher",
    "AutocastSupervisedTrainer",
    "resolve_amp_kwargs",
    "configure_engine_amp",
    "engine_autocast",
    "attack_in_engine_precision",
    "one_cycle_schedule",
    "AdvTrainingKeys",
    "AdversarialTrainingEvents",
    "TRAINING_METHODS",
    "TrainingMethod",
    "training_method",
    "register_training_method",
    "create_trainer",
    "PRESETS",
    "SSAT_EPS_RANGE",
    "TrainingPreset",
    "training_stats",
    "adversarial_training_metrics",
    "RandomStates",
    "find_randomizables",
    "current_run",
    "list_runs",
    "new_run_id",
    "list_checkpoints",
    "latest_checkpoint",
    "CyclingLoader",
    "unwrap_network",
]


#: names that moved out of monai_adv.engines: they still resolve here for one release, with a warning
_MOVED = {
    "ResumableCheckpointHandler": "monai_adv.handlers.checkpoint",
    "TorchRNGState": "monai_adv.handlers.checkpoint",
    "NonFiniteLossError": "monai_adv.handlers.checkpoint",
    "CheckpointError": "monai_adv.io",
    "save_checkpoint": "monai_adv.io",
    "load_checkpoint": "monai_adv.io",
    "verify_checkpoint": "monai_adv.io",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"monai_adv.engines.{name} moved to {_MOVED[name]}.{name}; the old name works for one release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'monai_adv.engines' has no attribute {name!r}")
