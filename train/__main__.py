"""`python -m train`: see `train.cli`."""

import os
import sys

# Before TensorFlow is imported: keep its C++ start-up logging off the
# terminal unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train.cli import main  # noqa: E402

sys.exit(main())
