"""The keys of the engines' outputs, in one place at the bottom of the package.

As MONAI keeps ``CommonKeys`` in ``monai.utils.enums``, the keys that the adversarial trainers and the
robust evaluator write into ``engine.state.output`` live here, below every package that reads them:
engines write them, handlers and the bundle read them, and none has to import the other for a key.
``AdvTrainingKeys`` is also exported from :mod:`monai_adv.engines` and ``RobustKeys`` from
:mod:`monai_adv.handlers`, where they were first published.
"""

from __future__ import annotations

from monai.utils import CommonKeys

__all__ = ["AdvTrainingKeys", "RobustKeys"]


class AdvTrainingKeys:
    """Keys of the per-iteration values the adversarial trainers put in ``engine.state.output``."""

    LOSS = CommonKeys.LOSS  #: the total loss that is back-propagated (a tensor)
    LOSS_LABELED = "loss_labeled"  #: supervised loss on the clean labeled batch
    LOSS_LABELED_ADV = "loss_labeled_adv"  #: loss on the attacked labeled batch (when there is one)
    LOSS_UNLABELED = "loss_unlabeled"  #: consistency loss on the attacked unlabeled batch
    LOSS_ROBUST = "loss_robust"  #: TRADES' KL term
    PSEUDO_CONFIDENCE = "pseudo_label_confidence"  #: mean max-softmax of the pseudo-labels
    PSEUDO_KEPT = "pseudo_label_kept"  #: fraction of pseudo-labels above the confidence threshold
    ATTACK_SUCCESS = "attack_success"  #: fraction of attacked training items the network gets wrong
    ATTACK_EPS = "attack_eps"  #: the eps of this iteration's attack (drawn per batch for a range)
    UNLABELED_WEIGHT = "unlabeled_weight"  #: the unlabeled term's weight this iteration (warm-up, ramp-up)
    #: share of pseudo-labels equal to the hidden true labels (monitoring only, with ``hidden_label_key``)
    PSEUDO_ACCURACY = "pseudo_label_accuracy"
    PSEUDO_HISTOGRAM = "pseudo_label_histogram"  #: share of each class among the pseudo-labels, ``(K,)``

    SCALARS = (
        LOSS,
        LOSS_LABELED,
        LOSS_LABELED_ADV,
        LOSS_UNLABELED,
        LOSS_ROBUST,
        PSEUDO_CONFIDENCE,
        PSEUDO_KEPT,
        ATTACK_SUCCESS,
        ATTACK_EPS,
        UNLABELED_WEIGHT,
        PSEUDO_ACCURACY,
    )


class RobustKeys:
    """Keys of a :class:`~monai_adv.engines.RobustEvaluator` output item.

    Clean quantities use the plain keys; the quantities of attack ``name`` use ``adv(key, name)``,
    i.e. ``"<key>/<name>"`` (``"pred/pgd"``, ``"uad_score/pgd"``, ...).
    """

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    SCORE = "uad_score"
    FLAG = "uad_flag"

    @staticmethod
    def adv(key: str, attack: str) -> str:
        """The key of ``key`` for the inputs attacked by ``attack``.

        Args:
            key: one of the plain keys (``PRED``, ``SCORE``, ``FLAG``, ``IMAGE``).
            attack: the attack's name in the evaluator.
        """
        return f"{key}/{attack}"
