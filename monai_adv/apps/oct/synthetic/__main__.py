# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""``python -m monai_adv.apps.oct.synthetic --out DIR ...``: write a synthetic OCT data set."""

from monai_adv.apps.oct.synthetic.writer import main

if __name__ == "__main__":
    raise SystemExit(main())
