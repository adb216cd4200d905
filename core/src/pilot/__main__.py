"""``python -m pilot``: the ``pilot`` command, for when its script is not on ``PATH``
(``pip install --user`` on a cluster login node)."""

import sys

from pilot.cli import main

sys.exit(main())
