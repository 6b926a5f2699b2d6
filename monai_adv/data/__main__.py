"""``python -m monai_adv.data check DIR``: check a data set before training on it."""

import sys

from monai_adv.data.check import main

sys.exit(main())
