"""`python -m mambast.train ...`: the same as `mambast train ...` (used by the device scripts)."""

import sys

from .cli import main

sys.exit(main())
