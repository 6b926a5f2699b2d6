"""``python -m monai_adv.apps.oct check DIR``: check a data set before training on it."""

import sys

from monai_adv.apps.oct.check import main

sys.exit(main())
