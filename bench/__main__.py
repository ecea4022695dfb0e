"""`python -m bench` runs the speed benchmark (see `bench/speed.py`)."""

import sys

from bench.speed import main

sys.exit(main())
