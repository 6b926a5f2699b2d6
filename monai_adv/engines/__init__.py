"""Adversarial training engines: SSAT (semi-supervised), Madry PGD-AT and TRADES, presets, checkpoint/resume."""

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
from monai_adv.engines.outputs import adversarial_training_metrics, training_stats
from monai_adv.engines.precision import (
    attack_in_engine_precision,
    configure_engine_amp,
    engine_autocast,
    resolve_amp_kwargs,
)
from monai_adv.engines.presets import PRESETS, SSAT_EPS_RANGE, TrainingPreset, create_trainer
from monai_adv.engines.rng import RandomStates, find_randomizables
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
    "AutocastSupervisedTrainer",
    "resolve_amp_kwargs",
    "configure_engine_amp",
    "engine_autocast",
    "attack_in_engine_precision",
    "one_cycle_schedule",
    "AdvTrainingKeys",
    "AdversarialTrainingEvents",
    "PRESETS",
    "SSAT_EPS_RANGE",
    "TrainingPreset",
    "create_trainer",
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
