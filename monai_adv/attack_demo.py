"""Deprecated: the attack demo moved to :mod:`monai_adv.apps.oct.attack_demo` (``python -m monai_adv.apps.oct.attack_demo``)."""

import warnings

from monai_adv.apps.oct.attack_demo import *  # noqa: F403
from monai_adv.apps.oct.attack_demo import main

warnings.warn(
    "monai_adv.attack_demo moved to monai_adv.apps.oct.attack_demo; the old name works for one release.",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    main()
