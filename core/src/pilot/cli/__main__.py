"""``python -m pilot.cli``."""

import sys

from pilot.cli import main

sys.exit(main())
