"""Descriptions written the BigJob way (issue 10, points 1-3): dicts with attribute access, built
empty and filled in any order, validated into a copy when used; the keys BigJob knew (aliases used,
the rest ignored with one warning, credentials never kept or shown); numbers as numeric strings;
environment values of any type."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pilot import (
    ComputeUnitDescription,
    DataUnitDescription,
    PilotComputeDescription,
    PilotComputeService,
    PilotDataDescription,
    PilotError,
    State,
    descriptions,
)
from pilot import log as pilot_log
from pilot.compute import unit_records
from pilot.description_keys import CREDENTIALS, IGNORED
from pilot.log import configure
from pilot.testing import wait_for

TYPES = [PilotComputeDescription, ComputeUnitDescription, PilotDataDescription, DataUnitDescription]
MINIMAL: dict[type, dict[str, Any]] = {
    PilotComputeDescription: {"service_url": "fork://localhost"}, ComputeUnitDescription: {"executable": "x"},
    PilotDataDescription: {"service_url": "/tmp/pd"}, DataUnitDescription: {},
}


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The log lines of this process, with the ignored keys not yet warned about."""
    monkeypatch.setattr(descriptions, "_warned", set())
    monkeypatch.delenv("PILOT_LOG_LEVEL", raising=False)
    monkeypatch.delenv("PILOT_LOG_FORMAT", raising=False)
    stream = io.StringIO()
    configure(stream=stream, force=True)
    yield stream
    structlog.reset_defaults()
    pilot_log._configured = False


# --- dicts with attribute access ------------------------------------------------------------------
def test_attribute_style_as_bigjob_scripts_write_it() -> None:
    pcd = PilotComputeDescription()
    pcd.service_url = "fork://localhost"
    pcd.number_of_processes = 4
    pcd.working_directory = "/scratch/me"
    assert isinstance(pcd, dict)
    assert pcd == {"service_url": "fork://localhost", "number_of_processes": 4, "working_directory": "/scratch/me"}
    assert pcd["number_of_processes"] is pcd.number_of_processes
    desc = PilotComputeDescription.from_dict(pcd)
    assert (desc.service_url, desc.number_of_processes, desc.working_directory) == ("fork://localhost", 4,
                                                                                    "/scratch/me")
    assert desc.walltime is None and dict(desc.environment) == {}


def test_dict_style_and_plain_dicts() -> None:
    cud = ComputeUnitDescription()
    cud["executable"] = "/bin/date"
    cud.arguments = ["-u"]
    assert cud.executable == "/bin/date" and cud["arguments"] == ["-u"]
    assert isinstance(cud, dict)
    assert json.loads(json.dumps(cud)) == {"executable": "/bin/date", "arguments": ["-u"]}
    as_plain = ComputeUnitDescription.from_dict({"executable": "/bin/date", "arguments": ["-u"]})
    assert ComputeUnitDescription.from_dict(cud) == as_plain
    assert ComputeUnitDescription(executable="/bin/date", arguments=["-u"]) == cud
    assert ComputeUnitDescription({"executable": "/bin/date", "arguments": ["-u"]}) == cud


def test_built_empty_and_filled_in_any_order() -> None:
    cud = ComputeUnitDescription()
    assert cud == {} and not cud
    assert (cud.output, cud.arguments, cud.walltime, cud.number_of_processes) == ("stdout.txt", (), None, 1)
    with pytest.raises(PilotError, match="executable"):
        ComputeUnitDescription.from_dict(cud)
    cud.output = "o.txt"
    cud["number_of_processes"] = 2
    cud.executable = "/bin/true"
    assert ComputeUnitDescription.from_dict(cud).to_dict() == ComputeUnitDescription.from_dict(
        {"executable": "/bin/true", "number_of_processes": 2, "output": "o.txt"}).to_dict()
    del cud.output
    assert "output" not in cud and cud.output == "stdout.txt"
    with pytest.raises(AttributeError):
        del cud.output
    with pytest.raises(AttributeError):
        _ = cud.no_such_key  # type: ignore[attr-defined]
    assert not hasattr(cud, "vm_id")
    cud.vm_id = "i-1"  # a key this project does not know, set and read as BigJob allowed
    assert cud.vm_id == cud["vm_id"] == "i-1"  # type: ignore[attr-defined]


def test_what_was_submitted_is_a_copy() -> None:
    cud = ComputeUnitDescription(executable="/bin/echo", arguments=["a"], environment={"A": "1"})
    submitted = ComputeUnitDescription.from_dict(cud)
    assert submitted is not cud and submitted == ComputeUnitDescription.from_dict(dict(cud))
    cud.executable = "/bin/rm"
    cud.arguments.append("-rf")
    cud.environment["A"] = "2"
    assert (submitted.executable, submitted.arguments, dict(submitted.environment)) == ("/bin/echo", ("a",),
                                                                                       {"A": "1"})
    assert ComputeUnitDescription.from_dict(submitted) is submitted
    assert ComputeUnitDescription.from_dict(cud) is not ComputeUnitDescription.from_dict(cud)


def test_unit_records_are_the_same_for_every_style() -> None:
    cud = ComputeUnitDescription()
    cud.executable = "/bin/date"
    cud["arguments"] = ["-u"]
    records = unit_records([cud, {"executable": "/bin/date", "arguments": ["-u"]},
                            ComputeUnitDescription.from_dict(cud)], cds_id="cds-x")
    assert records[0]["description"] == records[1]["description"] == records[2]["description"]
    assert records[0]["description"]["arguments"] == ["-u"]


@pytest.mark.parametrize("cls", TYPES, ids=[t.__name__ for t in TYPES])
def test_validated_descriptions_pickle_and_copy(cls: Any) -> None:
    desc = cls.from_dict(MINIMAL[cls])
    assert isinstance(desc, cls) and isinstance(desc, dict) and type(desc).__name__ == cls.__name__
    again = pickle.loads(pickle.dumps(desc))
    assert again == desc and type(again) is type(desc)
    assert copy.copy(desc) is desc and copy.deepcopy(desc) is desc
    user = cls(MINIMAL[cls])
    back = pickle.loads(pickle.dumps(user))
    assert back == user and type(back) is cls
    back.name = "editable"


# --- BigJob's keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PilotComputeDescription, ComputeUnitDescription])
def test_total_core_count_is_the_slots_when_number_of_processes_is_not_given(cls: Any) -> None:
    base = MINIMAL[cls]
    assert cls.from_dict({**base, "total_core_count": 8}).number_of_processes == 8
    assert cls.from_dict({**base, "total_core_count": "8"}).number_of_processes == 8
    both = cls.from_dict({**base, "total_core_count": 8, "number_of_processes": 2})
    assert both.number_of_processes == 2
    assert "total_core_count" not in both and "total_core_count" not in both.to_dict()
    assert cls.from_dict({"total_core_count": 8, **base, "number_of_processes": None}).number_of_processes == 8


def test_allocation_is_an_alias_of_project() -> None:
    pcd = PilotComputeDescription(service_url="fork://localhost", allocation="TG-123")
    desc = PilotComputeDescription.from_dict(pcd)
    assert desc.project == "TG-123" and desc.to_dict()["project"] == "TG-123" and "allocation" not in desc
    with pytest.raises(PilotError, match="given twice") as info:
        PilotComputeDescription.from_dict({**pcd, "project": "other"})
    assert info.value.key == "allocation"


def test_a_units_wall_time_limit_is_its_walltime() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "x", "wall_time_limit": "10"})
    assert cud.walltime == 10.0 and "wall_time_limit" not in cud.to_dict()


@pytest.mark.parametrize("cls", [PilotDataDescription, DataUnitDescription])
def test_number_of_replicas(cls: Any) -> None:
    assert cls.from_dict(MINIMAL[cls]).number_of_replicas is None
    desc = cls.from_dict({**MINIMAL[cls], "number_of_replicas": "2"})
    assert desc.number_of_replicas == 2 and desc.to_dict()["number_of_replicas"] == 2
    for bad in (0, -1, 1.5, "x", True):
        with pytest.raises(PilotError, match="number_of_replicas"):
            cls.from_dict({**MINIMAL[cls], "number_of_replicas": bad})


@pytest.mark.parametrize("key", sorted(IGNORED))
@pytest.mark.parametrize("cls", TYPES, ids=[t.__name__ for t in TYPES])
def test_ignored_keys_are_accepted_and_dropped(cls: Any, key: str) -> None:
    desc = cls.from_dict({**MINIMAL[cls], key: "SECRET-value"})
    assert key not in desc and key not in desc.to_dict()
    assert "SECRET-value" not in repr(desc) and "SECRET-value" not in json.dumps(desc.to_dict())
    assert desc == cls.from_dict(MINIMAL[cls])


def test_ignored_keys_are_warned_about_once_each_by_name(logs: io.StringIO) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    pcd = PilotComputeDescription(service_url="fork://localhost", number_executor_threads=4, vm_id="i-1",
                                  access_key_id=secret, secret_access_key=secret)
    for _ in range(3):
        PilotComputeDescription.from_dict(pcd)
    PilotDataDescription.from_dict({"service_url": "/tmp/pd", "region": "us-east-1", "access_key_id": secret})
    lines = logs.getvalue().splitlines()
    assert secret not in logs.getvalue()
    for key in ("number_executor_threads", "vm_id", "access_key_id", "secret_access_key", "region"):
        named = [line for line in lines if f"key='{key}'" in line]
        assert len(named) == 1, (key, lines)
        assert "level='warning'" in named[0] and "ignored" in named[0]
    assert len(lines) == 5


def test_a_credential_is_never_shown() -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    user = PilotComputeDescription(service_url="fork://localhost", userkey=secret, secret_access_key=secret,
                                   vm_ssh_keyfile=secret, access_key_id=secret, vm_ssh_keyname=secret)
    assert secret not in repr(user) and secret not in str(user)
    assert set(CREDENTIALS) <= set(user)
    for bad in ({"queue": 3}, {"number_of_processes": "many"}, {"secret_acess_key": secret}):
        with pytest.raises(PilotError) as info:
            PilotComputeDescription.from_dict({**user, **bad})
        assert secret not in str(info.value)


def test_a_credential_never_reaches_the_store_or_a_log(pilot_env: Any, tmp_path: Path, logs: io.StringIO) -> None:
    """A pilot and a unit described with BigJob's cloud keys run; the secret is in no file."""
    secret = f"SECRET-{uuid.uuid4().hex}"
    pcd = PilotComputeDescription()
    pcd.service_url = "fork://localhost"
    pcd.number_of_processes = "1"
    pcd.working_directory = os.path.join(os.getcwd(), "work")
    pcd.access_key_id = secret
    pcd.secret_access_key = secret
    pcd.userkey = secret
    pcd.vm_ssh_keyfile = secret
    pilot = PilotComputeService().create_pilot(pcd)
    cud = ComputeUnitDescription(executable="/bin/echo", arguments=["hello"], secret_access_key=secret)
    unit = pilot.submit_compute_unit(cud)
    wait_for(lambda: unit.get_state() in (State.Done, State.Failed), 30, f"{unit} ends")
    assert unit.get_state() == State.Done
    pilot.cancel()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "key='secret_access_key'" in logs.getvalue() and secret not in logs.getvalue()
    stored = pilot.get_details()["description"]
    assert stored["number_of_processes"] == 1 and not set(stored) & IGNORED
    assert not set(unit.get_details()["description"]) & IGNORED


@pytest.mark.parametrize(("cls", "wrong", "closest"), [
    (PilotComputeDescription, "total_core_cont", "total_core_count"),
    (PilotComputeDescription, "allocaton", "allocation"),
    (PilotComputeDescription, "number_executor_thread", "number_executor_threads"),
    (PilotComputeDescription, "secret_acess_key", "secret_access_key"),
    (ComputeUnitDescription, "wall_time_limt", "wall_time_limit"),
    (PilotDataDescription, "number_of_replica", "number_of_replicas"),
    (DataUnitDescription, "number_of_replica", "number_of_replicas"),
    (DataUnitDescription, "file_url", "file_urls"),
])
def test_a_misspelt_key_still_raises_with_the_closest_key(cls: Any, wrong: str, closest: str) -> None:
    with pytest.raises(PilotError) as info:
        cls.from_dict({**MINIMAL[cls], wrong: "value-never-shown"})
    assert info.value.key == wrong
    assert f"did you mean {closest!r}" in str(info.value)
    assert "value-never-shown" not in str(info.value)


# --- BigJob's values --------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "key", "given", "read"), [
    (PilotComputeDescription, "number_of_processes", "1", 1),
    (PilotComputeDescription, "number_of_processes", " 16 ", 16),
    (PilotComputeDescription, "processes_per_node", "2", 2),
    (PilotComputeDescription, "walltime", "10", 10.0),
    (PilotComputeDescription, "wall_time_limit", "0.5", 0.5),
    (ComputeUnitDescription, "number_of_processes", "4", 4),
    (ComputeUnitDescription, "walltime", "0.5", 0.5),
    (ComputeUnitDescription, "walltime", "1e1", 10.0),
    (PilotDataDescription, "size", "100", 100.0),
    (PilotDataDescription, "size", "0", 0.0),
])
def test_numbers_may_be_numeric_strings(cls: Any, key: str, given: str, read: Any) -> None:
    desc = cls.from_dict({**MINIMAL[cls], key: given})
    value = getattr(desc, cls._ALIASES.get(key, key))
    assert value == read and type(value) is type(read)
    assert json.loads(json.dumps(desc.to_dict())) == desc.to_dict()


class _Unit:
    """Stands for what a chained ensemble passes: an object whose str() is the value wanted."""

    def __str__(self) -> str:
        return "cu-42"


class _Broken:
    def __str__(self) -> str:
        raise RuntimeError("the value never shows")


def test_environment_values_of_any_type_are_made_strings() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "x", "environment": {
        "INT": 1, "FLOAT": 0.5, "BOOL": True, "NONE": None, "UNIT": _Unit(), "BYTES": b"caf\xc3\xa9", "STR": "s"}})
    assert dict(cud.environment) == {"INT": "1", "FLOAT": "0.5", "BOOL": "True", "NONE": "None", "UNIT": "cu-42",
                                     "BYTES": "café", "STR": "s"}
    assert json.loads(json.dumps(cud.to_dict()))["environment"]["UNIT"] == "cu-42"
    listed = ComputeUnitDescription.from_dict({"executable": "x", "environment": ["A=1", "B=x=y", "C="]})
    assert dict(listed.environment) == {"A": "1", "B": "x=y", "C": ""}
    pcd = PilotComputeDescription.from_dict({"service_url": "fork://", "environment": {"OMP_NUM_THREADS": 4}})
    assert dict(pcd.environment) == {"OMP_NUM_THREADS": "4"}


@pytest.mark.parametrize("value", [_Broken(), b"\xff\xfe"])
def test_an_environment_value_that_cannot_be_a_string(value: Any) -> None:
    with pytest.raises(PilotError, match="'VAR'") as info:
        ComputeUnitDescription.from_dict({"executable": "x", "environment": {"VAR": value}})
    assert info.value.key is not None and info.value.key.startswith("environment")
    assert "never shows" not in str(info.value)
