"""The timeline picture of the user guide, drawn from a real run (``tox -e docs`` runs it):

    python -m pilot.timeline.example docs/img/timeline.png

Two fork pilots (2 slots and 1 slot) run 40 units of different lengths, some failing, some
staging their input from a local PilotData and their output into one, through one
ComputeDataService; the picture is that service's timeline.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path


def run_and_draw(output: Path, units: int = 40, seed: int = 7) -> Path:
    """Run the example and draw its timeline to ``output`` (PNG, SVG or HTML)."""
    from pilot import ComputeDataService, PilotComputeService, PilotDataService
    from pilot.timeline import load_timeline, render

    rng = random.Random(seed)  # noqa: S311 - lengths of example units, not a secret
    with tempfile.TemporaryDirectory(prefix="pilot-timeline-example-") as tmp:
        os.environ["PILOT_HOME"] = str(Path(tmp) / "home")
        source = Path(tmp) / "input.dat"
        source.write_bytes(os.urandom(200_000))
        pds = PilotDataService()
        pd = pds.create_pilot({"service_url": str(Path(tmp) / "pd")})
        inputs = pd.submit_data_unit({"file_urls": [str(source)]})
        results = pd.submit_data_unit({"file_urls": []})
        inputs.wait()
        pcs = PilotComputeService()
        for slots in (2, 1):
            pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": slots,
                              "working_directory": str(Path(tmp) / "work")})
        cds = ComputeDataService()
        cds.add_pilot_compute_service(pcs)
        cds.add_pilot_data_service(pds)
        descriptions: list[dict[str, object]] = []
        for n in range(units):
            seconds = f"{rng.uniform(0.1, 0.6):.2f}"
            if n % 9 == 4:
                descriptions.append({"executable": "/bin/sh", "arguments": ["-c", f"'sleep {seconds}; exit 3'"]})
            elif n % 5 == 0:
                descriptions.append({"executable": "/bin/sh", "arguments": ["-c", f"'sleep {seconds}; wc -c input.dat "
                                                                                f"> out-{n}.txt'"],
                                     "input_data": [inputs.get_url()],
                                     "output_data": [{results.get_url(): [f"out-{n}.txt"]}]})
            else:
                descriptions.append({"executable": "/bin/sleep", "arguments": [seconds]})
        cds.submit_compute_units(descriptions)
        cds.wait(progress=False)
        drawn = render(load_timeline(cds.get_url()), output)
        cds.cancel()
        pcs.cancel()
        pds.cancel()
    return drawn


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pilot.timeline.example``."""
    parser = argparse.ArgumentParser(prog="python -m pilot.timeline.example", description=__doc__)
    parser.add_argument("output", type=Path, help="the picture to write (.png, .svg or .html)")
    parser.add_argument("-n", "--units", type=int, default=40)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    print(run_and_draw(args.output, args.units))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
