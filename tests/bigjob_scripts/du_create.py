"""First half of BigJob's reconnect example: store a DataUnit in a PilotData, print the URL to
reconnect to it from another process, and leave it there."""

import os
import sys

from pilot import PilotDataService

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]

if __name__ == "__main__":
    base_dir = os.path.join(WORKDIR, "data1")
    os.makedirs(base_dir, exist_ok=True)
    for i in range(3):
        with open(os.path.join(base_dir, f"file{i}.txt"), "w") as f:
            f.write(f"data file {i}\n")
    absolute_url_list = [os.path.join(base_dir, name) for name in sorted(os.listdir(base_dir))]

    pilot_data_service = PilotDataService(coordination_url=COORD)
    pd = pilot_data_service.create_pilot({"service_url": "file://" + os.path.join(WORKDIR, "pilotdata-1/"),
                                          "size": 100})
    du = pd.submit_data_unit({"file_urls": absolute_url_list})
    du.wait()
    print("***************************************************************")
    print(f"To reconnect to Data Unit 1 use the following URL: {du.url}")
    print(f"Run:\n\n {sys.executable} du_reconnect.py {du.url}")
