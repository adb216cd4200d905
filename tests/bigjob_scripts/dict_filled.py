"""BigJob pilot-cli style: descriptions filled like dicts, numbers given as numeric strings (as
argparse hands them over), BigJob keys this project uses (total_core_count, wall_time_limit) or
ignores (number_executor_threads), and what a misspelt key or a wrong value gives."""

import json
import os
import sys
import traceback

from pilot import ComputeUnitDescription, PilotComputeDescription, PilotComputeService, PilotError

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]


def main():
    pilot_compute_service = None
    try:
        pilot_compute_description = PilotComputeDescription()
        pilot_compute_description["service_url"] = "fork://localhost"
        pilot_compute_description["total_core_count"] = "2"  # slots, as a string
        pilot_compute_description["walltime"] = "10"
        pilot_compute_description["working_directory"] = WORKDIR
        pilot_compute_description["number_executor_threads"] = 16  # BigJob's, ignored here
        pilot_compute_description.update({"affinity_datacenter_label": "eu-de-south",
                                          "affinity_machine_label": "mymachine"})

        pilot_compute_service = PilotComputeService(coordination_url=COORD)
        pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)
        # a plain dict, the same ignored key again: no second warning
        pilotjob2 = pilot_compute_service.create_pilot({"service_url": "fork://localhost",
                                                        "number_of_processes": "1",
                                                        "working_directory": WORKDIR,
                                                        "number_executor_threads": 8})

        compute_unit_description = ComputeUnitDescription()
        compute_unit_description["executable"] = "/bin/echo"
        compute_unit_description["arguments"] = ["$N", "$F"]
        compute_unit_description["environment"] = {"N": 2, "F": 0.5}
        compute_unit_description["number_of_processes"] = "1"
        compute_unit_description["total_core_count"] = 1
        compute_unit_description["wall_time_limit"] = "5"
        compute_unit_description["output"] = "stdout.txt"
        compute_unit_description["error"] = "stderr.txt"
        units = [pilotjob.submit_compute_unit(compute_unit_description),
                 pilotjob2.submit_compute_unit(dict(compute_unit_description))]
        for unit in units:
            unit.wait()

        errors = {}
        for name, bad in (("misspelt", {"service_url": "fork://localhost", "number_of_proceses": 1}),
                          ("not_a_number", {"service_url": "fork://localhost", "number_of_processes": "two"})):
            try:
                pilot_compute_service.create_pilot(bad)
                errors[name] = None
            except PilotError as ex:
                errors[name] = ex.value
        outputs = []
        for unit in units:
            with open(os.path.join(unit.get_local_working_directory(), "stdout.txt")) as f:
                outputs.append(f.read().strip())
        result = {
            "done": [unit.get_state() == "Done" for unit in units],
            "outputs": outputs,
            "slots": [pilotjob.get_details()["slots"], pilotjob2.get_details()["slots"]],
            "errors": errors,
        }
        print("RESULT " + json.dumps(result))
        return 0
    except Exception as ex:
        print(f"AN ERROR OCCURRED: {ex}")
        traceback.print_exc()
        return -1
    finally:
        if pilot_compute_service is not None:
            pilot_compute_service.cancel()


if __name__ == "__main__":
    sys.exit(main())
