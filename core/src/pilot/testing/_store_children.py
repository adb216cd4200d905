"""Scripts the store conformance suite runs in child processes (``python -c``): two agents
claiming at once, and a writer and a reader on either side of a restart."""

#: Opens the store in a child process: ``argv = [module, class qualname, url]``.
CHILD_PRELUDE = """
import importlib, json, sys
_obj = importlib.import_module(sys.argv[1])
for _part in sys.argv[2].split("."):
    _obj = getattr(_obj, _part)
store = _obj().open_store(sys.argv[3])
"""

#: Claims units of pilot ``argv[4]`` in batches of ``argv[5]`` once told to go; prints the ids.
CLAIM_CHILD = CHILD_PRELUDE + """
print("ready", flush=True)
sys.stdin.readline()
claimed = []
while True:
    batch = store.claim_units(sys.argv[4], int(sys.argv[5]))
    if not batch:
        break
    claimed += [unit["id"] for unit in batch]
store.close()
print(json.dumps(claimed), flush=True)
"""

#: Writes a pilot (Running, heartbeat), a service, a link and units in several states.
WRITER_CHILD = CHILD_PRELUDE + """
from pilot.store import UnitUpdate
store.put_service("pcs-r", "pcs", {"heartbeat_timeout": 12.5})
store.link("cds-r", "pcs-r")
store.insert_pilot({"id": "pilot-r", "service_id": "pcs-r", "state": "New", "slots": 4,
                    "description": {"service_url": "fork://localhost"}})
assert store.update_pilot("pilot-r", {"state": "Pending", "native_id": "42@host"}, expect=["New"])
assert store.update_pilot("pilot-r", {"state": "Running", "hosts": ["n1", "n2"]}, expect=["Pending"])
assert store.heartbeat("pilot-r", 1700000000.25)["heartbeat"] == 1700000000.25
store.insert_units([{"id": f"cu-r{n}", "cds_id": "cds-r", "pilot_id": "pilot-r", "state": "Pending",
                     "slots": 1, "description": {"executable": "/bin/true"}, "submitted": 1.0 + n}
                    for n in range(4)])
claimed = [u["id"] for u in store.claim_units("pilot-r", 3)]
assert claimed == ["cu-r0", "cu-r1", "cu-r2"], claimed
applied = store.update_units([UnitUpdate(f"cu-r{n}", {"state": "Running", "started": 2.0}, expect=["Pending"])
                              for n in range(3)])
assert list(applied) == ["cu-r0", "cu-r1", "cu-r2"], applied
applied = store.update_units([
    UnitUpdate("cu-r0", {"state": "Done", "exit_code": 0, "finished": 3.0}, expect=["Running"]),
    UnitUpdate("cu-r1", {"state": "Failed", "exit_code": 7, "reason": "exit code 7", "finished": 3.0},
               expect=["Running"]),
])
assert applied == {"cu-r0": "Running", "cu-r1": "Running"}, applied
store.close()
print("written", flush=True)
"""

#: Reads back what the writer wrote and prints it as JSON.
READER_CHILD = CHILD_PRELUDE + """
out = {
    "service": store.get_service("pcs-r"),
    "children": store.children("cds-r"),
    "pilots": store.get_pilots(["pilot-r"]),
    "units": store.get_units([f"cu-r{n}" for n in range(4)]),
    "more": [u["id"] for u in store.claim_units("pilot-r", 10)],
}
store.close()
print(json.dumps(out, default=str), flush=True)
"""
