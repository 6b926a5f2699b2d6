"""Adversarial training engines: SSAT (semi-supervised), Madry PGD-AT, TRADES and RST, the registered training
methods, checkpoint/resume."""

from monai_adv.distributed import unwrap_network
from monai_adv.engines.batches import CyclingLoader
from monai_adv.engines.checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    ResumableCheckpointHandler,
    TorchRNGState,
    current_run,
    latest_checkpoint,
    list_checkpoints,
    list_runs,
    load_checkpoint,
    new_run_id,
    save_checkpoint,
    verify_checkpoint,
)
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
from monai_adv.engines.rng import RandomStates, find_randomizables
from monai_adv.engines.rst import PseudoLabeledLoader, RobustSelfTrainingTrainer, load_teacher, pseudo_label
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
    "CheckpointError",
    "NonFiniteLossError",
    "RandomStates",
    "find_randomizables",
    "current_run",
    "list_runs",
    "new_run_id",
    "verify_checkpoint",
    "ResumableCheckpointHandler",
    "TorchRNGState",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "CyclingLoader",
    "unwrap_network",
]
