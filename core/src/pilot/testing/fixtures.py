"""pytest fixtures shipped with pilot-core (registered through the ``pytest11`` entry point)."""
