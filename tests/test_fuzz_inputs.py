"""Bad input, searched for (hypothesis): descriptions, URLs and site configuration files are
either accepted or rejected with ``PilotError``; no other exception, no crash, and nothing half
created (no pilot or unit record left by a rejected call). Bounded, so it runs in seconds."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pilot import ComputeDataService, PilotCompute, PilotComputeService, PilotDataService, PilotError
from pilot.descriptions import (
    ComputeUnitDescription,
    DataUnitDescription,
    PilotComputeDescription,
    PilotDataDescription,
)
from pilot.session import Session
from pilot.site import RESOURCE_KEYS, load_file, resolve_pilot
from pilot.store.sqlite import SQLiteStore
from pilot.urls import parse, redact, scheme_of

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
PILOT_KEYS = ["service_url", "number_of_processes", "processes_per_node", "working_directory", "walltime",
              "wall_time_limit", "queue", "project", "reservation", "spmd_variation", "environment", "extra",
              "affinity_datacenter_label", "affinity_machine_label", "resource", "file_transfer"]
UNIT_KEYS = ["executable", "arguments", "environment", "working_directory", "output", "error", "input",
             "number_of_processes", "spmd_variation", "walltime", "name", "restartable", "input_data",
             "output_data", "file_transfer", "affinity_datacenter_label", "affinity_machine_label"]
RUNNABLE_SCHEMES = {"fork", "local", "slurm", "pbs", "lsf", "flux", "cobalt"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["mpi", "single", "fork://localhost", "A=1", "", "[x",
                                                           "dir-\udcff", "a\x00b", 2**63, 1e308]),
                    st.binary(max_size=4), st.frozensets(st.integers(0, 3), max_size=2))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


def descriptions(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts of known keys (and some unknown ones) with values of any type."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=12)), values, max_size=6)


def runnable(desc: dict[str, Any]) -> bool:
    """Whether a pilot description could really start a pilot (those are not created here)."""
    url = desc.get("service_url")
    return isinstance(url, str) and scheme_of(url) in RUNNABLE_SCHEMES


@pytest.fixture(scope="module")
def session() -> Any:
    opened = Session()
    yield opened
    opened.close()


@FUZZ
@given(desc=descriptions(PILOT_KEYS))
def test_pilot_descriptions(desc: dict[str, Any]) -> None:
    try:
        PilotComputeDescription.from_dict(desc)
    except PilotError:
        pass


@FUZZ
@given(desc=descriptions(UNIT_KEYS))
def test_unit_descriptions(desc: dict[str, Any]) -> None:
    try:
        ComputeUnitDescription.from_dict(desc)
    except PilotError:
        pass


@FUZZ
@given(desc=descriptions(PILOT_KEYS), service_url=st.one_of(st.text(max_size=30), st.sampled_from(
    ["nosuch://host", "", "://", "fork:/", "slurm//x", "file:///x"])))
def test_rejected_pilots_leave_no_record(desc: dict[str, Any], service_url: str, redis_store_url: str,
                                         session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_pilot on the Redis store with descriptions no adaptor can run: PilotError, no record."""
    monkeypatch.setenv("PILOT_SITE_CONFIG", str(tmp_path / "absent.toml"))
    if "service_url" not in desc or not isinstance(desc["service_url"], str) or desc.get("resource"):
        desc = {**desc, "service_url": service_url}
    assume(not runnable(desc))
    pcs = PilotComputeService(redis_store_url, session=session)
    with pytest.raises(PilotError):
        pcs.create_pilot(desc)
    assert pcs._store.pilots_of([pcs.id]) == []


@FUZZ
@given(batch=st.lists(descriptions(UNIT_KEYS), min_size=1, max_size=4),
       good=st.integers(0, 3))
def test_unit_submissions_are_all_or_nothing(batch: list[dict[str, Any]], good: int, redis_store_url: str,
                                            session: Session) -> None:
    """submit_compute_units on the Redis store: all units stored, or PilotError and none."""
    batch = [{"executable": "/bin/true"}] * good + batch
    cds = ComputeDataService(coordination_url=redis_store_url, session=session)
    try:
        units = cds.submit_compute_units(batch)
    except PilotError:
        assert cds._store.find_units(cds_id=cds.id) == []
    else:
        assert len(cds._store.find_units(cds_id=cds.id)) == len(batch) == len(units)
    finally:
        cds.cancel()


@FUZZ
@given(scheme=st.one_of(st.sampled_from(["redis", "sqlite", "nosuch", "", "REDIS"]), st.text(max_size=6)),
       middle=st.text(max_size=30), kind=st.sampled_from(["pilot", "unit", "cds", "pcs", "x", ""]),
       object_id=st.text(max_size=12), password=st.text(min_size=8, max_size=12))
def test_object_urls(scheme: str, middle: str, kind: str, object_id: str, password: str, redis_password: str,
                     session: Session, tmp_path: Path) -> None:
    """Reconnecting with any URL: a handle, or PilotError; a password never shows in the error."""
    assume("\x00" not in middle and password.isalnum() and password not in ("redis", "pilot", "sqlite"))
    if scheme.lower() == "redis":
        store = f"{scheme}://:{password}@127.0.0.1:6390/{middle}"  # a wrong password: refused at once
    elif scheme == "sqlite":
        store = f"sqlite://{tmp_path}/{uuid.uuid4().hex}/{middle.replace('#', '')}"
    else:
        store = f"{scheme}://{middle}"
    url = f"{store}#{kind}/{object_id}"
    try:
        parse(url, "unit")
    except PilotError:
        pass
    parse_error = ""
    try:
        parse(url, "pilot")
    except PilotError as exc:
        parse_error = str(exc)
    if scheme.lower() == "redis" and password not in object_id + middle:
        assert password not in parse_error
    message = ""
    try:
        PilotCompute(pilot_url=url, session=session)
    except PilotError as exc:
        message = str(exc)
    assert redis_password not in message
    if scheme.lower() == "redis" and password not in object_id + middle:
        assert password not in message


_TOML_VALUES = ['"slurm://localhost"', '"fork://localhost"', '""', "4", "-1", "0", "1.5", "nan", "inf", "true",
                '["module load x"]', "[1, 2]", '{ A = "1" }', "{ a = 1 }", '"x"', "[", '"unterminated']


@FUZZ
@given(lines=st.lists(st.one_of(
    st.builds(lambda n: f"[resources.{n}]", st.sampled_from(["c", "d", "x y", '"q"', ""])),
    st.builds(lambda k, v: f"{k} = {v}", st.one_of(st.sampled_from(RESOURCE_KEYS), st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)), st.sampled_from(_TOML_VALUES)),
    st.sampled_from(["[resources]", "[other]", "resources = 1", "# comment", "", "[[resources.c]]"]),
    st.text(max_size=20)), max_size=8), resource=st.sampled_from(["c", "d", "missing"]),
    desc=descriptions(["number_of_processes", "walltime", "queue", "environment", "extra"]))
def test_site_configuration_files(lines: list[str], resource: str, desc: dict[str, Any], tmp_path: Path) -> None:
    """Any site file: its resources, or PilotError naming the file; resolving a pilot against it
    gives a description or PilotError."""
    path = tmp_path / f"{uuid.uuid4().hex}.toml"
    path.write_text("\n".join(lines))
    message = str(path)
    try:
        load_file(path)
    except PilotError as exc:
        message = str(exc)
    assert str(path) in message
    try:
        base = PilotComputeDescription.from_dict({**desc, "resource": resource})
    except PilotError:
        return
    try:
        resolved = resolve_pilot(base, [path])
    except PilotError:
        return
    assert resolved.description.service_url
    walltime = resolved.description.walltime
    assert walltime is None or (math.isfinite(walltime) and walltime > 0)


DESCRIPTION_TYPES = [PilotComputeDescription, ComputeUnitDescription, PilotDataDescription, DataUnitDescription]


@pytest.mark.parametrize("kind", DESCRIPTION_TYPES, ids=lambda kind: kind.__name__)
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_every_description_type(kind: Any, data: st.DataObject) -> None:
    """Every description type: its own keys (and others) with values of any type: a description
    that the store can keep as JSON, or PilotError naming a key."""
    desc = data.draw(descriptions([*kind._FIELDS, "extra", "size"]))
    try:
        made = kind.from_dict(desc)
    except PilotError as exc:
        refused: PilotError | None = exc
    else:
        refused = None
        json.dumps(made.to_dict())
    assert refused is None or refused.key is not None or "description" in str(refused)


@pytest.fixture(scope="module")
def pd_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    opened = Session()
    root = tmp_path_factory.mktemp("pds")
    yield PilotDataService(f"sqlite://{root / 'store.sqlite'}", session=opened), root
    opened.close()


@settings(FUZZ, max_examples=60)
@given(desc=descriptions(list(PilotDataDescription._FIELDS)))
def test_rejected_pilot_data_makes_no_directory(desc: dict[str, Any], pd_service: Any) -> None:
    """create_pilot of PilotData: made, or PilotError and no directory created."""
    pds, root = pd_service
    place = root / uuid.uuid4().hex
    desc = {**desc, "service_url": str(place)}
    try:
        pds.create_pilot(desc)
    except PilotError:
        assert not place.exists()


@FUZZ
@given(url=st.one_of(st.text(max_size=40), st.builds(
    lambda scheme, rest: f"{scheme}://{rest}",
    st.sampled_from(["sqlite", "redis", "file", "fork", "sftp", "x"]), st.text(max_size=30))),
    kind=st.sampled_from(["pilot", "unit", "data-unit", "pilot-data", "pcs", "cds", "pds"]))
def test_any_url_parses_or_is_a_pilot_error(url: str, kind: str) -> None:
    """Brackets, surrogates, NUL, '%', '#': every URL function answers or raises PilotError."""
    for call in (lambda: scheme_of(url), lambda: parse(url, kind), lambda: redact(url)):
        try:
            call()
        except PilotError:
            pass


@pytest.fixture(scope="module")
def real_store_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real store file holding a few hundred units, checkpointed (no -wal)."""
    from pilot.testing.records import unit_record

    path = tmp_path_factory.mktemp("real") / "store.sqlite"
    store = SQLiteStore(path)
    store.insert_units([dict(unit_record(f"cu-{n}"), reason="r" * 100) for n in range(300)])
    store.put_service("pcs-1", "pcs", {"a": 1})
    store.close()
    return path.read_bytes()


@settings(FUZZ, max_examples=60)
@given(cut=st.integers(0, 2**20), spots=st.lists(st.tuples(st.integers(0, 2**20), st.binary(min_size=1, max_size=64)),
                                                 max_size=4), garbage=st.booleans())
def test_the_store_reading_a_damaged_file(cut: int, spots: list[tuple[int, bytes]], garbage: bool,
                                          real_store_bytes: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A store file truncated, overwritten in places, or all garbage: the store opens and reads,
    or raises PilotError naming the file; never a raw sqlite3 error."""
    data = bytearray(real_store_bytes[:cut % (len(real_store_bytes) + 1)])
    for offset, chunk in spots:
        if data:
            at = offset % len(data)
            data[at:at + len(chunk)] = chunk
    if garbage:
        data = bytearray(b"".join(chunk for _, chunk in spots) or b"x")
    path = tmp_path_factory.mktemp("damaged") / "store.sqlite"
    path.write_bytes(bytes(data))
    message = str(path)
    try:
        store = SQLiteStore(path)
    except PilotError as exc:
        message = str(exc)
    else:
        try:
            store.find_units()
            store.get_units(["cu-1", "cu-299"])
            store.get_service("pcs-1")
            store.find_pilots()
            store.insert_units([{"id": "cu-new", "state": "Pending", "slots": 1}])
        except PilotError as exc:
            message = str(exc)
        finally:
            store.close()
    assert str(path) in message
