"""FAKE batch commands (``python -m pilot.testing.fake_batch qsub|qstat|qdel|bsub|bjobs|bkill
...``), for tests only: see ``pilot.testing.fake_batch``."""

from __future__ import annotations

import sys

from pilot.testing.fake_batch.commands import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
