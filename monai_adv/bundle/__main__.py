"""``python -m monai_adv.bundle <command>`` (see :mod:`monai_adv.bundle.cli`)."""

from monai_adv.bundle.cli import main

raise SystemExit(main())
