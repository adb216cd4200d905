"""BigJob's example-pilot-data style: two PilotData, a ComputeDataService made without a URL that
gets the pilot data service, a DataUnit with number_of_replicas 2 whose files are named by a
plain path and by ssh://localhost/path, cds.wait() (which waits for data units too), then the
list and lookup calls BigJob users compare with URLs."""

import json
import os
import sys
import traceback

from pilot import ComputeDataService, PilotDataService

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]
INPUT = os.path.join(WORKDIR, "input")


def main():
    pilot_data_service = compute_data_service = None
    try:
        os.makedirs(INPUT, exist_ok=True)
        for i in range(3):
            with open(os.path.join(INPUT, f"file{i}.txt"), "w") as f:
                f.write(f"data file {i}\n")
        file_urls = [os.path.join(INPUT, "file0.txt"), os.path.join(INPUT, "file1.txt"),
                     "ssh://localhost" + os.path.join(INPUT, "file2.txt")]

        pilot_data_service = PilotDataService(coordination_url=COORD)
        pd1 = pilot_data_service.create_pilot({
            "service_url": "file://" + os.path.join(WORKDIR, "pilotdata-1/"),
            "size": 100,
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": "mymachine-1",
        })
        pd2 = pilot_data_service.create_pilot({
            "service_url": "file://" + os.path.join(WORKDIR, "pilotdata-2/"),
            "size": 100,
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": "mymachine-2",
        })

        compute_data_service = ComputeDataService()
        compute_data_service.add_pilot_data_service(pilot_data_service)

        data_unit_description = {"file_urls": file_urls, "number_of_replicas": 2}
        du = compute_data_service.submit_data_unit(data_unit_description)
        print("Finished setup of Pilot Data and Compute Data Service. Waiting for scheduling of Data Units")
        compute_data_service.wait()
        state_after_wait = str(du.get_state())
        running_after_wait = du.get_state() == "Running"

        du.wait()
        pd_list = du.list_pilot_data()
        print("PDs: " + str([str(pd) for pd in pd_list]))
        unknown = du.get_url().replace(du.get_id(), "du-" + "0" * 32)
        du.export(os.path.join(WORKDIR, "export"))
        result = {
            "state_after_wait": state_after_wait,
            "running_after_wait": running_after_wait,
            "replicas": len(pd_list),
            "pds_in_list": [pd1.get_url() in pd_list, pd2.get_url() in pd_list],
            "pd_url_attr": [pd1.url == pd1.get_url(), pilot_data_service.url == pilot_data_service.get_url()],
            "du_url_attr": du.url == du.get_url(),
            "du_in_pd": [du.get_url() in pd1.list_data_units(), du.get_url() in pd2.list_data_units()],
            "du_in_cds": du.get_url() in compute_data_service.list_data_units(),
            "get_du": pd1.get_du(du.get_url()) == du.get_url(),
            "get_du_unknown_is_none": pd1.get_du(unknown) is None,
            "get_data_unit": compute_data_service.get_data_unit(du.get_url()) == du.get_url(),
            "get_pilot": pilot_data_service.get_pilot(pd2.get_url()) == pd2.get_url(),
            "cds_pilot_data": sorted(pd.get_url() for pd in compute_data_service.list_pilot_data())
            == sorted([pd1.get_url(), pd2.get_url()]),
            "files": sorted(du.list()),
            "pilot_data_of_du": {pd.get_url() for pd in du.get_pilot_data()} == {pd.get_url() for pd in pd_list},
        }
        print("RESULT " + json.dumps(result))
        return 0
    except Exception as ex:
        print(f"AN ERROR OCCURRED: {ex}")
        traceback.print_exc()
        return -1
    finally:
        print("Terminate Pilot Data/Compute Data Service")
        if compute_data_service is not None:
            compute_data_service.cancel()
        if pilot_data_service is not None:
            pilot_data_service.cancel()


if __name__ == "__main__":
    sys.exit(main())
