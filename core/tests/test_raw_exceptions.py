"""Bad input that used to escape as a raw exception ends in ``PilotError`` naming the key or the
cause (issue 11, item 11)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pilot import ComputeDataService, PilotComputeService, PilotDataService, PilotError
from pilot.compute import poll_until

BAD_TIMEOUTS = ["3", b"3", True, -1, -0.5, math.nan, math.inf, -math.inf, 10**400, [1]]


def _waiters(tmp_path: Path) -> tuple[dict[str, Callable[[Any], Any]], ComputeDataService]:
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    cds = ComputeDataService()
    cds.add_pilot_data_service(pds)
    (tmp_path / "in.txt").write_text("x")
    du = cds.submit_data_unit({"file_urls": [str(tmp_path / "in.txt")]})
    du.wait(30)  # no transfer thread left running when the session closes
    cu = cds.submit_compute_unit({"executable": "/bin/true"})  # no pilot: stays queued
    pcs = PilotComputeService()
    return {"ComputeUnit": cu.wait, "ComputeDataService": cds.wait, "PilotComputeService": pcs.wait,
            "DataUnit": du.wait, "PilotData": pd.wait, "PilotDataService": pds.wait,
            "an empty ComputeDataService": ComputeDataService().wait}, cds


def test_every_wait_refuses_a_bad_timeout(tmp_path: Path) -> None:
    """A string, bool, negative, NaN (which never timed out) or infinite timeout is refused."""
    waiters, cds = _waiters(tmp_path)
    try:
        for name, wait in waiters.items():
            for timeout in BAD_TIMEOUTS:
                with pytest.raises(PilotError, match="timeout must be") as caught:
                    wait(timeout)
                assert caught.value.key == "timeout", (name, timeout)
    finally:
        cds.cancel()


def test_a_nan_timeout_no_longer_waits_forever() -> None:
    with pytest.raises(PilotError, match="nan"):
        poll_until(lambda: None, math.nan, "nothing")


@pytest.mark.parametrize("timeout", [0, 0.0, 0.05, 1])
def test_good_timeouts_still_time_out(timeout: float) -> None:
    with pytest.raises(TimeoutError):
        poll_until(lambda: None, timeout, "nothing")
    assert poll_until(lambda: 1, None, "something") == 1
