"""Deprecated: ``python -m monai_adv.data check DIR`` is ``python -m monai_adv.apps.oct check DIR``."""

import sys
import warnings

from monai_adv.apps.oct.check import main

warnings.warn(
    "'python -m monai_adv.data' moved to 'python -m monai_adv.apps.oct'; the old name works for one release.",
    DeprecationWarning,
    stacklevel=1,
)
sys.exit(main())
