import os
import sys

import torch

# the tests are small: one thread each keeps them fast on 2 cores and deterministic
torch.set_num_threads(int(os.environ.get("MONAI_ADV_TEST_THREADS", "1")))
sys.path.insert(0, os.path.dirname(__file__))
