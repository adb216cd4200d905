"""``python -m pilot.agent --pilot <pilot-id> --store <store-url>``."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the agent of one pilot until it is canceled, reaches its walltime or fails."""
    parser = argparse.ArgumentParser(prog="python -m pilot.agent", description=__doc__)
    parser.add_argument("--pilot", required=True, help="the pilot id (also shows in ps)")
    parser.add_argument("--store", required=True, help="coordination store URL")
    parser.add_argument("--drain-margin", type=float, default=0.0,
                        help="seconds before the pilot walltime at which to drain")
    args = parser.parse_args(argv)
    try:
        os.setsid()  # our own session: we outlive the client, and cancel ends us and our units
    except PermissionError:
        pass  # already a session leader (or a batch system made us one)
    from pilot.agent.startup import run_agent

    return run_agent(args.pilot, args.store, drain_margin=args.drain_margin)


if __name__ == "__main__":
    sys.exit(main())
