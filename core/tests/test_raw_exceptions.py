"""Bad input that used to escape as a raw exception ends in ``PilotError`` naming the key or the
cause (issue 11, item 11)."""

from __future__ import annotations

import math
import os
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


def _fork(**fields: Any) -> dict[str, Any]:
    return {"service_url": "fork://localhost", "number_of_processes": 1, **fields}


@pytest.mark.parametrize(("description", "key"), [
    (_fork(number_of_processes=2**63), "number_of_processes"),  # was OverflowError from the store
    (_fork(number_of_processes=2**31), "number_of_processes"),
    (_fork(extra={"a": {1, 2}}), "extra['a']"),  # was TypeError from json
    (_fork(extra={"a": b"bytes"}), "extra['a']"),
    (_fork(extra={"a": [object()]}), "extra['a']"),
    (_fork(extra={"a": {(1, 2): "x"}}), "extra['a']"),
])
def test_pilot_descriptions_the_store_cannot_keep_are_refused(description: dict[str, Any], key: str) -> None:
    pcs = PilotComputeService()
    with pytest.raises(PilotError) as caught:
        pcs.create_pilot(description)
    assert caught.value.key == key
    assert pcs.list_pilots() == []


def test_a_huge_pilot_data_size_is_refused_before_the_directory_is_made(tmp_path: Path) -> None:
    pds = PilotDataService()
    for size in (1e308, 2.0**41):
        with pytest.raises(PilotError, match="at most") as caught:
            pds.create_pilot({"service_url": str(tmp_path / "pd"), "size": size})
        assert caught.value.key == "size"
    assert not (tmp_path / "pd").exists()
    assert pds.create_pilot({"service_url": str(tmp_path / "ok"), "size": 1e6}) is not None


def test_export_onto_a_file_and_add_files_of_none_are_pilot_errors(tmp_path: Path) -> None:
    pds = PilotDataService()
    pd = pds.create_pilot({"service_url": str(tmp_path / "pd")})
    (tmp_path / "in.txt").write_text("x")
    du = pd.submit_data_unit({"file_urls": [str(tmp_path / "in.txt")]})
    du.wait(30)
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(PilotError, match="a-file exists and is not a directory"):
        du.export(tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "mine"
    for bad in (None, 3, [None], {"a": 1}):
        with pytest.raises(PilotError, match="add_files takes a list") as caught:
            du.add_files(bad)  # type: ignore[arg-type]
        assert caught.value.key == "file_urls"
    assert du.add_files(tmp_path / "in.txt") == ["in.txt"]
    assert sorted(os.path.basename(p) for p in du.export(tmp_path / "out")) == ["in.txt"]


def test_a_fork_pilot_of_more_slots_than_the_host_can_hold_fails_at_submission() -> None:
    """The agent would build one entry per slot: a fork pilot of 2**31-1 slots is refused."""
    from pilot.builtin.fork import max_fork_slots

    pcs = PilotComputeService()
    pilot = pcs.create_pilot(_fork(number_of_processes=max_fork_slots() + 1))
    assert pilot.get_state().value == "Failed"
    assert "number_of_processes" in pilot.get_details()["reason"]
    assert "at most" in pilot.get_details()["reason"]
