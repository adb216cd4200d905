"""Descriptions: dicts, validated (errors name the key) into read-only copies. The BigJob ways of
writing them are in ``test_descriptions_bigjob.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pilot import (
    ComputeUnitDescription,
    DataUnitDescription,
    PilotComputeDescription,
    PilotDataDescription,
    PilotError,
)

PCD = {"service_url": "fork://localhost", "number_of_processes": 4, "processes_per_node": 2,
       "working_directory": "/scratch/me", "walltime": 10, "queue": "debug", "project": "abc123",
       "reservation": "res1", "spmd_variation": "mpi", "file_transfer": ["file:///etc/hosts > BIGJOB_WORK_DIR"],
       "affinity_datacenter_label": "dc1", "affinity_machine_label": "m1", "environment": {"OMP_NUM_THREADS": "2"},
       "extra": {"constraint": "haswell", "gres": ["gpu:1"]}}
CUD = {"executable": "/bin/date", "arguments": ["-u", "+%s"], "environment": ["TZ=UTC", "A=b=c"],
       "working_directory": "/tmp/w", "output": "out.txt", "error": "err.txt", "input": "in.txt",
       "number_of_processes": 2, "spmd_variation": "single", "input_data": ["sqlite:///s#data-unit/du-1"],
       "output_data": [{"sqlite:///s#data-unit/du-2": ["*.out", "log/*"]}],
       "file_transfer": ["/etc/hosts > SUBJOB_WORK_DIR"], "affinity_datacenter_label": "dc1",
       "affinity_machine_label": "m1", "walltime": 0.5, "name": "date-1", "restartable": True}
PDD = {"service_url": "file:///tmp/pd", "size": 100, "number_of_replicas": 2, "affinity_datacenter_label": "dc1",
       "affinity_machine_label": "m1", "extra": {"mode": "0700"}}
DUD = {"file_urls": ["/etc/hosts", "file:///etc/passwd"], "number_of_replicas": 1, "affinity_datacenter_label": "dc1",
       "affinity_machine_label": "m1", "name": "inputs"}
TYPES: list[tuple[Any, dict[str, Any]]] = [
    (PilotComputeDescription, PCD), (ComputeUnitDescription, CUD), (PilotDataDescription, PDD),
    (DataUnitDescription, DUD),
]


@pytest.mark.parametrize(("cls", "data"), TYPES, ids=[t[0].__name__ for t in TYPES])
def test_every_key_builds_and_round_trips(cls: Any, data: dict[str, Any]) -> None:
    """Each description type accepts all its documented keys; to_dict gives a JSON-ready dict
    that builds an equal description."""
    desc = cls.from_dict(data)
    out = desc.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert cls.from_dict(out) == desc
    assert cls.from_dict(desc) is desc


def test_values_are_read_as_given() -> None:
    pcd = PilotComputeDescription.from_dict(PCD)
    assert (pcd.service_url, pcd.number_of_processes, pcd.processes_per_node) == ("fork://localhost", 4, 2)
    assert (pcd.walltime, pcd.queue, pcd.project, pcd.reservation) == (10.0, "debug", "abc123", "res1")
    assert dict(pcd.environment) == {"OMP_NUM_THREADS": "2"}
    assert dict(pcd.extra) == {"constraint": "haswell", "gres": ["gpu:1"]}
    cud = ComputeUnitDescription.from_dict(CUD)
    assert cud.arguments == ("-u", "+%s")
    assert dict(cud.environment) == {"TZ": "UTC", "A": "b=c"}
    assert cud.output_data == ({"sqlite:///s#data-unit/du-2": ("*.out", "log/*")},)
    assert (cud.walltime, cud.restartable, cud.name) == (0.5, True, "date-1")
    assert (PilotDataDescription.from_dict(PDD).size, PilotDataDescription.from_dict(PDD).number_of_replicas) == (
        100.0, 2)
    assert DataUnitDescription.from_dict(DUD).file_urls == ("/etc/hosts", "file:///etc/passwd")
    assert DataUnitDescription.from_dict(DUD).number_of_replicas == 1


def test_defaults() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "/bin/true"})
    assert (cud.output, cud.error, cud.number_of_processes, cud.spmd_variation) == ("stdout.txt", "stderr.txt", 1,
                                                                                   "single")
    assert (cud.arguments, dict(cud.environment), cud.working_directory, cud.input) == ((), {}, None, None)
    pcd = PilotComputeDescription.from_dict({"service_url": "fork://localhost"})
    assert (pcd.number_of_processes, pcd.walltime, pcd.working_directory) == (1, None, None)
    assert DataUnitDescription.from_dict({}).file_urls == ()
    empty = DataUnitDescription.from_dict({"file_urls": []})
    assert DataUnitDescription.from_dict(empty.to_dict()) == empty


def test_to_dict_gives_the_keys_set_and_the_defaults_that_are_not_none() -> None:
    """What is stored for a unit or a pilot: the same dict as when descriptions were dataclasses."""
    assert ComputeUnitDescription.from_dict({"executable": "/bin/true"}).to_dict() == {
        "executable": "/bin/true", "arguments": [], "output": "stdout.txt", "error": "stderr.txt",
        "number_of_processes": 1, "spmd_variation": "single", "input_data": [], "output_data": [],
        "file_transfer": [], "restartable": False}
    assert ComputeUnitDescription.from_dict({"executable": "x", "environment": {}, "name": None}).to_dict() == \
        ComputeUnitDescription.from_dict({"executable": "x"}).to_dict()
    assert PilotComputeDescription.from_dict({"service_url": "fork://localhost"}).to_dict() == {
        "service_url": "fork://localhost", "number_of_processes": 1, "file_transfer": []}
    assert PilotComputeDescription.from_dict({"resource": "site"}).to_dict() == {
        "service_url": "", "resource": "site", "number_of_processes": 1, "file_transfer": []}
    assert PilotDataDescription.from_dict({"service_url": "/tmp/pd", "extra": {}}).to_dict() == {
        "service_url": "/tmp/pd"}
    assert DataUnitDescription.from_dict({}).to_dict() == {"file_urls": []}
    out = CUD.copy()
    del out["environment"]
    assert ComputeUnitDescription.from_dict(CUD).to_dict() == {
        **out, "environment": {"TZ": "UTC", "A": "b=c"}}


def test_the_seed_example_description() -> None:
    """BigJob's example: ``"arguments": [""]`` and ``output`` are accepted as written."""
    cud = ComputeUnitDescription.from_dict({"executable": "/bin/date", "arguments": [""], "output": "stdout.txt",
                                            "number_of_processes": 1, "spmd_variation": "single"})
    assert cud.arguments == ("",)


@pytest.mark.parametrize(("cls", "data", "wrong", "closest"), [
    (ComputeUnitDescription, {"executeable": "/bin/date"}, "executeable", "executable"),
    (ComputeUnitDescription, {"executable": "x", "argument": ["a"]}, "argument", "arguments"),
    (ComputeUnitDescription, {"executable": "x", "enviroment": {}}, "enviroment", "environment"),
    (PilotComputeDescription, {"service_url": "fork://", "number_of_process": 2}, "number_of_process",
     "number_of_processes"),
    (PilotComputeDescription, {"service_url": "fork://", "walltme": 2}, "walltme", "walltime"),
    (PilotDataDescription, {"service_url": "/tmp", "sise": 2}, "sise", "size"),
    (DataUnitDescription, {"file_url": []}, "file_url", "file_urls"),
])
def test_unknown_key_names_the_key_and_the_closest(cls: Any, data: dict[str, Any], wrong: str, closest: str) -> None:
    with pytest.raises(PilotError) as info:
        cls.from_dict(data)
    assert info.value.key == wrong
    assert f"{wrong!r}" in str(info.value)
    assert f"did you mean {closest!r}" in str(info.value)


def test_unknown_key_without_a_close_one_lists_the_known_keys() -> None:
    with pytest.raises(PilotError, match=r"'zzzz'.*known keys:.*executable") as info:
        ComputeUnitDescription.from_dict({"executable": "x", "zzzz": 1})
    assert info.value.key == "zzzz"


@pytest.mark.parametrize(("cls", "data", "key"), [
    (ComputeUnitDescription, {"executable": 5}, "executable"),
    (ComputeUnitDescription, {"executable": "x", "arguments": "-l -a"}, "arguments"),
    (ComputeUnitDescription, {"executable": "x", "arguments": [None]}, "arguments"),
    (ComputeUnitDescription, {"executable": "x", "arguments": [True]}, "arguments"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": "four"}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": "4.0"}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": "0"}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": None, "total_core_count": "x"},
     "total_core_count"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": 2.0}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": True}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "number_of_processes": 0}, "number_of_processes"),
    (ComputeUnitDescription, {"executable": "x", "environment": "A=1"}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": ["A"]}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": ["=1"]}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": {"": "x"}}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": {"1A": "x"}}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": {"A-B": "x"}}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "spmd_variation": "openmp"}, "spmd_variation"),
    (ComputeUnitDescription, {"executable": "x", "walltime": "10 min"}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "walltime": "nan"}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "walltime": "0"}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "walltime": [10]}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "walltime": 0}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "walltime": float("inf")}, "walltime"),
    (ComputeUnitDescription, {"executable": "x", "input_data": "du"}, "input_data"),
    (ComputeUnitDescription, {"executable": "x", "output_data": {"du": ["*"]}}, "output_data"),
    (ComputeUnitDescription, {"executable": "x", "output_data": [{"du": "*"}]}, "output_data"),
    (ComputeUnitDescription, {"executable": "x", "restartable": "yes"}, "restartable"),
    (ComputeUnitDescription, {"executable": "x", "output": ["a"]}, "output"),
    (PilotComputeDescription, {"service_url": 1}, "service_url"),
    (PilotComputeDescription, {"service_url": "fork://", "file_transfer": "a > b"}, "file_transfer"),
    (PilotComputeDescription, {"service_url": "fork://", "extra": ["a"]}, "extra"),
    (PilotComputeDescription, {"service_url": "fork://", "queue": 3}, "queue"),
    (PilotDataDescription, {"service_url": "/tmp", "size": -1}, "size"),
    (PilotDataDescription, {"service_url": "/tmp", "size": "1GB"}, "size"),
    (PilotDataDescription, {"service_url": "/tmp", "size": "-1"}, "size"),
    (PilotDataDescription, {"service_url": "/tmp", "number_of_replicas": 0}, "number_of_replicas"),
    (DataUnitDescription, {"number_of_replicas": "two"}, "number_of_replicas"),
    (DataUnitDescription, {"file_urls": "/etc/hosts"}, "file_urls"),
    (DataUnitDescription, {"file_urls": [1]}, "file_urls"),
])
def test_wrong_type_names_the_key(cls: Any, data: dict[str, Any], key: str) -> None:
    with pytest.raises(PilotError, match=key) as info:
        cls.from_dict(data)
    assert info.value.key is not None
    assert info.value.key.startswith(key)


@pytest.mark.parametrize(("cls", "data", "key"), [
    (ComputeUnitDescription, {}, "executable"),
    (ComputeUnitDescription, {"executable": None}, "executable"),
    (ComputeUnitDescription, {"executable": "  "}, "executable"),
    (PilotComputeDescription, {"number_of_processes": 2}, "service_url"),
    (PilotComputeDescription, {"service_url": ""}, "service_url"),
    (PilotDataDescription, {"size": 1}, "service_url"),
])
def test_missing_required_key(cls: Any, data: dict[str, Any], key: str) -> None:
    with pytest.raises(PilotError, match=key) as info:
        cls.from_dict(data)
    assert info.value.key == key


def test_optional_key_given_as_none_is_left_unset() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "x", "walltime": None, "name": None})
    assert (cud.walltime, cud.name) == (None, None)


def test_not_a_dict() -> None:
    with pytest.raises(PilotError, match="dict"):
        ComputeUnitDescription.from_dict(["executable", "x"])  # type: ignore[arg-type]
    with pytest.raises(PilotError, match="strings"):
        ComputeUnitDescription.from_dict({"executable": "x", 1: "y"})


def test_wall_time_limit_is_an_alias_of_walltime() -> None:
    pcd = PilotComputeDescription.from_dict({"service_url": "fork://localhost", "wall_time_limit": 1.5})
    assert pcd.walltime == 1.5
    assert pcd.to_dict()["walltime"] == 1.5
    assert "wall_time_limit" not in pcd.to_dict()
    with pytest.raises(PilotError, match="given twice") as info:
        PilotComputeDescription.from_dict({"service_url": "fork://", "walltime": 1, "wall_time_limit": 2})
    assert info.value.key == "wall_time_limit"


def test_validated_descriptions_are_read_only() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "x", "environment": {"A": "1"}, "arguments": ["a"]})
    with pytest.raises(PilotError, match="read-only"):
        cud.executable = "/bin/rm"
    with pytest.raises(PilotError, match="read-only"):
        cud["executable"] = "/bin/rm"
    for change in (lambda: cud.update(executable="/bin/rm"), lambda: cud.pop("executable"), cud.clear,
                   cud.popitem, lambda: cud.setdefault("name", "n"), lambda: cud.__delitem__("executable"),
                   lambda: cud.__delattr__("executable")):
        with pytest.raises(PilotError, match="read-only"):
            change()
    with pytest.raises(TypeError):
        cud.environment["A"] = "2"  # type: ignore[index]
    with pytest.raises(AttributeError):
        cud.arguments.append("b")  # type: ignore[attr-defined]
    assert cud.to_dict()["executable"] == "x"
    pcd = PilotComputeDescription.from_dict({"service_url": "fork://", "extra": {"k": "v"}})
    with pytest.raises(PilotError, match="read-only"):
        pcd.number_of_processes = 64
    with pytest.raises(TypeError):
        pcd.extra["k"] = "w"  # type: ignore[index]


def test_an_editable_copy_of_a_validated_description() -> None:
    """``Cls(desc)`` is a plain, editable description again; validating it gives an equal one."""
    cud = ComputeUnitDescription.from_dict({"executable": "x", "environment": {"A": "1"}})
    copy = ComputeUnitDescription(cud)
    copy.executable = "y"
    assert cud.executable == "x"
    assert ComputeUnitDescription.from_dict(copy) == ComputeUnitDescription.from_dict({**cud.to_dict(),
                                                                                      "executable": "y"})


def test_input_dict_is_copied() -> None:
    """Changing the dict after building does not change the description."""
    env = {"A": "1"}
    data = {"executable": "x", "environment": env, "arguments": ["a"]}
    cud = ComputeUnitDescription.from_dict(data)
    env["A"] = "2"
    data["arguments"].append("b")  # type: ignore[attr-defined]
    data["executable"] = "y"
    assert dict(cud.environment) == {"A": "1"}
    assert cud.arguments == ("a",)
    assert cud.executable == "x"
    nested = {"gres": ["gpu:1"], "opts": {"a": ["b"]}}
    pcd = PilotComputeDescription.from_dict({"service_url": "fork://", "extra": nested})
    nested["gres"].append("gpu:2")
    nested["opts"]["a"].append("c")  # type: ignore[index]
    assert dict(pcd.extra) == {"gres": ["gpu:1"], "opts": {"a": ["b"]}}
    assert pcd.to_dict()["extra"] == {"gres": ["gpu:1"], "opts": {"a": ["b"]}}


def test_environment_as_dict_or_list() -> None:
    as_dict = ComputeUnitDescription.from_dict({"executable": "x", "environment": {"A": "1", "B_2": 3, "C": ""}})
    as_list = ComputeUnitDescription.from_dict({"executable": "x", "environment": ["A=1", "B_2=3", "C="]})
    assert dict(as_dict.environment) == dict(as_list.environment) == {"A": "1", "B_2": "3", "C": ""}
    assert as_dict == as_list
    assert as_list.to_dict()["environment"] == {"A": "1", "B_2": "3", "C": ""}


def test_arguments_with_numbers() -> None:
    cud = ComputeUnitDescription.from_dict({"executable": "/bin/sleep", "arguments": [10, 2.5, "-x", -1]})
    assert cud.arguments == ("10", "2.5", "-x", "-1")
    assert cud.to_dict()["arguments"] == ["10", "2.5", "-x", "-1"]


def test_walltime_may_be_a_fraction_of_a_minute() -> None:
    assert ComputeUnitDescription.from_dict({"executable": "x", "walltime": 0.5}).walltime == 0.5
    assert PilotComputeDescription.from_dict({"service_url": "fork://", "walltime": 2}).walltime == 2.0


@pytest.mark.parametrize(("cls", "data", "key"), [
    (PilotComputeDescription, {"service_url": "fork://", "queue": "debug\n#SBATCH --x"}, "queue"),
    (PilotComputeDescription, {"service_url": "fork://", "project": "p\r"}, "project"),
    (PilotComputeDescription, {"service_url": "fork://", "allocation": "p\n"}, "allocation"),
    (PilotComputeDescription, {"service_url": "fork://", "reservation": "\x1b[0m"}, "reservation"),
    (PilotComputeDescription, {"service_url": "fork://", "working_directory": "/a\nb"}, "working_directory"),
    (PilotComputeDescription, {"service_url": "fork://", "extra": {"slurm.qos": "x\ny"}}, "extra"),
    (PilotComputeDescription, {"service_url": "fork://", "extra": {"a\tb": 1}}, "extra"),
    (PilotComputeDescription, {"service_url": "fork://", "extra": {"a": ["ok", {"b": "\x85"}]}}, "extra"),
    (PilotComputeDescription, {"service_url": "fork://", "environment": {"A": "1\n2"}}, "environment"),
    (PilotComputeDescription, {"service_url": "fork://", "environment": ["A=1\r"]}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "environment": {"A": "x\x00"}}, "environment"),
    (ComputeUnitDescription, {"executable": "x", "working_directory": "w\n"}, "working_directory"),
    (ComputeUnitDescription, {"executable": "x", "output": "o\n.txt"}, "output"),
    (ComputeUnitDescription, {"executable": "x", "error": "\x7f"}, "error"),
    (ComputeUnitDescription, {"executable": "x", "input": "i\x00"}, "input"),
])
def test_control_characters_where_they_reach_a_script_or_a_path(cls: Any, data: dict[str, Any], key: str) -> None:
    with pytest.raises(PilotError, match=r"control characters|NUL") as info:
        cls.from_dict(data)
    assert info.value.key is not None and info.value.key.startswith(key)


@pytest.mark.parametrize(("cls", "data", "key"), [
    (ComputeUnitDescription, {"executable": "/bin/echo\x00"}, "executable"),
    (ComputeUnitDescription, {"executable": "x", "arguments": ["a\x00b"]}, "arguments"),
    (ComputeUnitDescription, {"executable": "x", "arguments": ["\ud800"]}, "arguments"),
    (ComputeUnitDescription, {"executable": "x", "name": "\udfff"}, "name"),
    (ComputeUnitDescription, {"executable": "x", "input_data": ["du\x00"]}, "input_data"),
    (PilotComputeDescription, {"service_url": "fork://\x00"}, "service_url"),
    (DataUnitDescription, {"file_urls": ["/etc/\x00hosts"]}, "file_urls"),
])
def test_every_string_is_utf8_text_without_nul(cls: Any, data: dict[str, Any], key: str) -> None:
    with pytest.raises(PilotError, match=r"NUL|UTF-8") as info:
        cls.from_dict(data)
    assert info.value.key == key


def test_other_fields_may_hold_newlines_and_any_text() -> None:
    """Arguments, names and environment names are not restricted beyond UTF-8 without NUL."""
    cud = ComputeUnitDescription.from_dict({"executable": "python3", "arguments": ["-c", "print(1)\nprint(2)"],
                                            "name": "tab\there", "output": "résumé 📄.txt",
                                            "environment": {"LANG": "fr_FR.UTF-8 é"}})
    assert cud.arguments[1] == "print(1)\nprint(2)"
    assert cud.output == "résumé 📄.txt"


def test_an_environment_value_is_never_shown_in_an_error() -> None:
    with pytest.raises(PilotError) as info:
        ComputeUnitDescription.from_dict({"executable": "x", "environment": {"TOKEN": "s3cr3t\nvalue"}})
    assert "s3cr3t" not in str(info.value)
    assert "'TOKEN'" in str(info.value)


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A=B"])
def test_an_environment_name_that_is_no_variable_name_is_named_as_such(name: str) -> None:
    with pytest.raises(PilotError, match=r"'environment': '.*' is not a valid variable name"):
        ComputeUnitDescription.from_dict({"executable": "x", "environment": {name: "v"}})
