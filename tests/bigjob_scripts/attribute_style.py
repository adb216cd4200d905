"""BigJob tutorial style: a simple ensemble whose descriptions are built empty and filled
attribute by attribute; environment values that are not strings (BigJob applied str())."""

import json
import os
import sys
import traceback

import pilot

COORD = os.environ.get("COORD")  # unset: the default store
WORKDIR = os.environ["WORKDIR"]
NUMBER_JOBS = 4


def main():
    pilot_compute_service = None
    try:
        pilot_description = pilot.PilotComputeDescription()
        pilot_description.service_url = "fork://localhost"
        pilot_description.number_of_processes = 2
        pilot_description.working_directory = WORKDIR
        pilot_description.walltime = 10
        is_dict = isinstance(pilot_description, dict) and pilot_description["service_url"] == "fork://localhost"

        pilot_compute_service = pilot.PilotComputeService(COORD)
        pilotjob = pilot_compute_service.create_pilot(pilot_description)
        pilot_description.number_of_processes = 64  # what was submitted is a copy: changes nothing

        tasks = []
        for i in range(NUMBER_JOBS):
            task_desc = pilot.ComputeUnitDescription()
            task_desc.executable = "/bin/echo"
            task_desc.arguments = ["I am task number $TASK_NO of $TASK_SET"]
            task_desc.environment = {"TASK_NO": i, "TASK_SET": "A"}
            task_desc.number_of_processes = 1
            task_desc.output = "simple-ensemble-stdout.txt"
            task_desc.error = "simple-ensemble-stderr.txt"
            task = pilotjob.submit_compute_unit(task_desc)
            print(f"* Submitted task '{i}' with id '{task.get_id()}'")
            tasks.append(task)

        print("Waiting for tasks to finish...")
        pilotjob.wait()

        outputs = []
        for task in tasks:
            with open(os.path.join(task.get_local_working_directory(), "simple-ensemble-stdout.txt")) as f:
                outputs.append(f.read().strip())
        result = {
            "is_dict": is_dict,
            "done": [task.get_state() == "Done" for task in tasks],
            "outputs": outputs,
            "slots": pilotjob.get_details()["slots"],
            "described_slots": pilotjob.pilot_compute_description["number_of_processes"],
            "ids": [task.id == task.get_id() for task in tasks],
            "urls": [task.url == task.get_url() for task in tasks] + [pilotjob.url == pilotjob.get_url()],
            "listed": [task.get_url() in pilotjob.list_compute_units() for task in tasks],
            "pilot_listed": pilotjob.get_url() in pilot_compute_service.list_pilots(),
            "pilot_computes": pilotjob.get_url() in pilot_compute_service.pilot_computes,
            "subjob": tasks[0].get_subjob().get_url() == tasks[0].get_url(),
        }
        print("RESULT " + json.dumps(result))
        return 0
    except Exception as ex:
        print(f"AN ERROR OCCURRED: {ex}")
        traceback.print_exc()
        return -1
    finally:
        print("Terminating BigJob...")
        if pilot_compute_service is not None:
            pilot_compute_service.cancel()


if __name__ == "__main__":
    sys.exit(main())
