"""The remote-GPU helpers are scripts, not package modules: import them from scripts/remote/."""

import sys
from pathlib import Path

REMOTE = Path(__file__).resolve().parents[2] / "scripts" / "remote"
if str(REMOTE) not in sys.path:
    sys.path.insert(0, str(REMOTE))
