"""BigJob's example-pilot-api-decentral style: two pilots, a ComputeDataServiceDecentral made
without a URL, units placed by labels, then cds.wait()."""

import json
import os
import sys
import traceback

from pilot import (
    ComputeDataService,
    ComputeDataServiceCentral,
    ComputeDataServiceDecentral,
    PilotComputeService,
    State,
)

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]


def main():
    pilot_compute_service = compute_data_service = None
    try:
        pilot_compute_service = PilotComputeService(coordination_url=COORD)
        pilot_compute_description = {
            "service_url": "fork://localhost",
            "number_of_processes": 1,
            "working_directory": os.path.join(WORKDIR, "work"),
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": "mymachine",
        }
        pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)
        pilotjob2 = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

        compute_data_service = ComputeDataServiceDecentral()
        compute_data_service.add_pilot_compute_service(pilot_compute_service)

        compute_unit_description = {
            "executable": "/bin/date",
            "arguments": [""],
            "number_of_processes": 1,
            "output": "stdout.txt",
            "error": "stderr.txt",
            "affinity_datacenter_label": "eu-de-south",
            "affinity_machine_label": "mymachine",
        }
        units = [compute_data_service.submit_compute_unit(compute_unit_description) for _ in range(4)]
        print("Finished setup. Waiting for scheduling of CU")
        compute_data_service.wait()

        outputs = []
        for unit in units:
            with open(os.path.join(unit.get_local_working_directory(), "stdout.txt")) as f:
                outputs.append(f.read().strip())
        pilots = {unit.get_details()["pilot"] for unit in units}
        result = {
            "done": [unit.get_state() == State.Done for unit in units],
            "outputs": outputs,
            "on_our_pilots": sorted(pilots) == sorted({pilotjob.get_url(), pilotjob2.get_url()} & pilots),
            "same_class": [issubclass(ComputeDataServiceDecentral, ComputeDataService),
                           issubclass(ComputeDataServiceCentral, ComputeDataService)],
            "cds_id": compute_data_service.get_id() == compute_data_service.id,
            "cds_url": compute_data_service.url == compute_data_service.get_url(),
            "cds_state": str(compute_data_service.get_state()),
            "cds_state_done": compute_data_service.get_state() == "Done",
            "cds_details": isinstance(compute_data_service.get_details(), dict),
            "listed": [unit.get_url() in compute_data_service.list_compute_units() for unit in units],
            "listed_as_set": len(set(compute_data_service.list_compute_units()) & {u.get_url() for u in units}),
            "pcs_url": pilot_compute_service.url == pilot_compute_service.get_url(),
        }
        print("RESULT " + json.dumps(result))
        return 0
    except Exception as ex:
        print(f"AN ERROR OCCURRED: {ex}")
        traceback.print_exc()
        return -1
    finally:
        print("Terminate Pilot Compute and Compute Data Service")
        if compute_data_service is not None:
            compute_data_service.cancel()
        if pilot_compute_service is not None:
            pilot_compute_service.cancel()


if __name__ == "__main__":
    sys.exit(main())
