"""``python -m monai_adv.bundle demo`` / ``compare``."""

from monai_adv.bundle.demo import main

raise SystemExit(main())
