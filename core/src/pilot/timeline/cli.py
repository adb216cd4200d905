"""``pilot timeline URL -o FILE [--store URL]``: the click command (the ``pilot`` group adds it)."""

from __future__ import annotations

import time

import click

from pilot.errors import PilotError


@click.command("timeline")
@click.argument("url")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="File to write: .png or .svg (an image) or .html (an interactive page).")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="Coordination store holding URL when URL is a bare id (default: the default store).")
def timeline(url: str, output: str, store_url: str | None) -> None:
    """Draw the timeline of a run: each unit of a service (URL of a ComputeDataService or a
    PilotComputeService) or of a pilot as a bar on its pilot's slots over time, coloured by
    state, with slots busy and units queued below."""
    from pilot.timeline import render
    from pilot.timeline.data import load_timeline

    try:
        began = time.perf_counter()
        loaded = load_timeline(url, store_url)
        written = render(loaded, output)
    except PilotError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{written}: {len(loaded.rows)} units on {len(loaded.pilots)} pilots "
               f"({time.perf_counter() - began:.2f} s)")
