"""Bundle-agnostic tooling, and the small helpers the bundles' configs call.

The helpers glue the package's components together for ``python -m monai.bundle run``: make sure the
data set exists (generating the embedded synthetic OCT set on the first run), divide it into labeled,
unlabeled, validation and test lists, list the files to predict, load checkpoints safely, and write
the bundle's ``report.json`` and ``predictions.csv``. Everything here is plain Python with clear
errors; the models, attacks, engines and detectors themselves come from the rest of ``monai_adv``.

Any MONAI bundle: :func:`audit_bundle` (``python -m monai_adv.bundle audit``) evaluates a model-zoo bundle's
own model under attack and writes one robustness report; :func:`harden_bundle` (``... harden``) turns its
training config into adversarial training; both are also config overlays (:func:`overlay_path`).

No bundle is named in code: the bundles are found by scanning (:func:`available_bundles`) and each
describes itself, its task, its systems and its demo steps, in the ``"monai_adv"`` section of its
``metadata.json`` (:class:`BundleDescription`), which the demo runner (:func:`run_demo`) and the
comparer read.
"""

from monai_adv.bundle.audit import AUDIT_ATTACKS, DEFAULT_ATTACKS, AttackBudget, BundleAudit, audit_bundle
from monai_adv.bundle.checkpoints import (
    CheckpointMetadata,
    CheckpointMismatchError,
    check_checkpoint_metadata,
    read_checkpoint_metadata,
    verify_sha256,
    write_sha256,
)
from monai_adv.bundle.cli import main
from monai_adv.bundle.compare import compare_reports, compare_segmentation_reports
from monai_adv.bundle.components import (
    attack_grid,
    detection_handlers,
    fit_detector,
    load_optional_detector,
    load_weights,
    require_file,
    run_without_meta_tracking,
)
from monai_adv.bundle.data import (
    DATASET_LAYOUTS,
    DatasetLayout,
    image_datalist,
    oct_split_datalists,
    prepare_dataset,
    prepare_oct_dataset,
    split_datalists,
    stratified_subset,
)
from monai_adv.bundle.demo import demo_plan, run_demo, run_layer_demo
from monai_adv.bundle.description import BundleDescription, DemoRun, DemoStep, DemoSystem
from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.bundle.harden import HardenResult, harden_bundle
from monai_adv.bundle.inference import readable_datalist
from monai_adv.bundle.locate import (
    available_bundles,
    copy_bundle,
    default_bundle_name,
    find_bundle,
    is_bundle_dir,
    packaged_bundle_dir,
    resolve_bundle_dir,
)
from monai_adv.bundle.overlays import available_overlays, overlay_path
from monai_adv.bundle.segmentation import (
    MaskWriter,
    oct_layer_datalists,
    prepare_oct_layer_dataset,
    segmentation_dice_metric,
)
from monai_adv.bundle.writers import BundleReportWriter, PredictionWriter, bundle_report
from monai_adv.distributed import is_main_process, rank

__all__ = [
    "audit_bundle",
    "BundleAudit",
    "AttackBudget",
    "AUDIT_ATTACKS",
    "DEFAULT_ATTACKS",
    "harden_bundle",
    "HardenResult",
    "overlay_path",
    "available_overlays",
    "prepare_dataset",
    "split_datalists",
    "stratified_subset",
    "DatasetLayout",
    "DATASET_LAYOUTS",
    "prepare_oct_dataset",
    "oct_split_datalists",
    "image_datalist",
    "readable_datalist",
    "BundleInputError",
    "input_error",
    "load_weights",
    "CheckpointMetadata",
    "CheckpointMismatchError",
    "check_checkpoint_metadata",
    "read_checkpoint_metadata",
    "write_sha256",
    "verify_sha256",
    "require_file",
    "load_optional_detector",
    "detection_handlers",
    "fit_detector",
    "attack_grid",
    "run_without_meta_tracking",
    "rank",
    "is_main_process",
    "BundleReportWriter",
    "PredictionWriter",
    "bundle_report",
    "compare_reports",
    "compare_segmentation_reports",
    "run_demo",
    "run_layer_demo",
    "demo_plan",
    "BundleDescription",
    "DemoSystem",
    "DemoStep",
    "DemoRun",
    "available_bundles",
    "default_bundle_name",
    "find_bundle",
    "is_bundle_dir",
    "packaged_bundle_dir",
    "copy_bundle",
    "resolve_bundle_dir",
    "prepare_oct_layer_dataset",
    "oct_layer_datalists",
    "segmentation_dice_metric",
    "MaskWriter",
    "main",
]
