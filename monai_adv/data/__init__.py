"""Deprecated: the OCT data code moved to :mod:`monai_adv.apps.oct` (it is an application, not the generic library).

``monai_adv.data`` and its submodules (``monai_adv.data.synthetic``, ``monai_adv.data.transforms``, ...) are
the same modules under their old names for one release: importing them warns, and every name resolves to the
object of :mod:`monai_adv.apps.oct`. Change ``monai_adv.data`` to ``monai_adv.apps.oct`` in imports and
configs.
"""

import importlib
import pkgutil
import sys
import warnings

import monai_adv.apps.oct as _oct
from monai_adv.apps.oct import *  # noqa: F403
from monai_adv.apps.oct import __all__  # noqa: F401

warnings.warn(
    "monai_adv.data moved to monai_adv.apps.oct; the old name works for one release. Change 'monai_adv.data' "
    "to 'monai_adv.apps.oct' in imports and bundle configs.",
    DeprecationWarning,
    stacklevel=2,
)

# the old submodule names are the new modules themselves (not copies), so classes and caches are shared
for _info in pkgutil.walk_packages(_oct.__path__, prefix="monai_adv.apps.oct."):
    if _info.name.rsplit(".", 1)[-1] == "__main__" or _info.name.endswith(".attack_demo"):
        continue
    _module = importlib.import_module(_info.name)
    sys.modules["monai_adv.data." + _info.name[len("monai_adv.apps.oct.") :]] = _module
    if "." not in _info.name[len("monai_adv.apps.oct.") :]:
        globals()[_info.name.rsplit(".", 1)[-1]] = _module
del _info, _module
