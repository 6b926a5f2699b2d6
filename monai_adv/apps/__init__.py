"""Applications built on the generic library, one folder each, as MONAI keeps ``monai/apps/<name>``.

- :mod:`monai_adv.apps.oct`: retinal OCT: the synthetic B-scan generator, the Kermany datalists and
  transforms, the data check, the realism measures and the attack demo.
"""
