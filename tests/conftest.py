import os
import sys

import torch
from hypothesis import HealthCheck, settings

# the tests are small: one thread each keeps them fast on 2 cores and deterministic
torch.set_num_threads(int(os.environ.get("MONAI_ADV_TEST_THREADS", "1")))
sys.path.insert(0, os.path.dirname(__file__))

# "ci" (the default): the same examples on every run, so a suite that passed once passes again;
# "explore": fresh random examples and many more of them, to hunt for new counterexamples
# (HYPOTHESIS_PROFILE=explore make test). A counterexample found there becomes a plain test.
settings.register_profile(
    "ci", max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "explore", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
