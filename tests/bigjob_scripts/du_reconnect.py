"""Second half of BigJob's reconnect example (example-pilot-data-reconnect): reconnect to a
DataUnit by its URL alone, move a replica to a new PilotData with add_pilot_data, export it."""

import json
import os
import sys
import time

from pilot import DataUnit, PilotDataService

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(f"Usage: {sys.executable} {__file__} <Data Unit URL to Reconnect to>")
        sys.exit(-1)
    reconnect_url = sys.argv[1]

    pilot_data_service = PilotDataService(coordination_url=COORD)
    pd_new = pilot_data_service.create_pilot({"service_url": "file://" + os.path.join(WORKDIR, "pilotdata-reconnect/"),
                                              "size": 100})
    print(f"Pilot Data URL: {pilot_data_service.url}")

    du = DataUnit(du_url=reconnect_url)
    state = str(du.get_state())
    du.add_pilot_data(pd_new)
    deadline = time.time() + 30
    while pd_new.get_url() not in du.get_pilot_data() and time.time() < deadline:
        time.sleep(0.2)
    du.export(os.path.join(WORKDIR, "export"))
    print("RESULT " + json.dumps({
        "state": state,
        "files": sorted(du.list()),
        "replicas": sorted(pd.get_url() for pd in du.get_pilot_data()),
        "new_pd": pd_new.get_url(),
        "du_in_new_pd": du.get_url() in pd_new.list_data_units(),
    }))
