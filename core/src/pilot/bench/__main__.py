"""``python -m pilot.bench``."""

from pilot.bench import main

raise SystemExit(main())
