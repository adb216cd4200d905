"""``python -m pilot.timeline URL -o FILE [--store URL]``."""

from pilot.timeline.cli import timeline

timeline(prog_name="python -m pilot.timeline")
