"""BigJob's XSEDE tutorial style: the Redis password comes from the environment and is put in
BigJob's coordination URL form redis://PASSWORD@host:port; a ComputeDataService made without a
URL takes that store from the first service added. Prints every URL and detail it can, the
processes of its pilot as ps shows them, and the message of a wrong password."""

import json
import os
import subprocess
import sys
import time
import traceback

import pilot

REDIS_PWD = os.environ.get("REDIS_PASSWORD")
REDIS_HOST = os.environ["REDIS_HOST"]  # host:port, with /db?prefix=... for the test's isolation
COORD = f"redis://{REDIS_PWD}@{REDIS_HOST}"
WORKDIR = os.environ["WORKDIR"]
NUMBER_JOBS = 3


def main():
    pilot_compute_service = compute_data_service = None
    try:
        pilot_description = pilot.PilotComputeDescription()
        pilot_description.service_url = "fork://localhost"
        pilot_description.number_of_processes = 2
        pilot_description.working_directory = WORKDIR
        pilot_description.walltime = 10

        pilot_compute_service = pilot.PilotComputeService(COORD)
        pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_description)

        compute_data_service = pilot.ComputeDataService()
        compute_data_service.add_pilot_compute_service(pilot_compute_service)

        tasks = []
        for i in range(NUMBER_JOBS):
            task_desc = pilot.ComputeUnitDescription()
            task_desc.executable = "/bin/echo"
            task_desc.arguments = ["Hello, I am task number $TASK_NO"]
            task_desc.environment = [f"TASK_NO={i}"]
            task_desc.number_of_processes = 1
            task_desc.output = "stdout.txt"
            task_desc.error = "stderr.txt"
            task = compute_data_service.submit_compute_unit(task_desc)
            print(f"* Submitted task '{i}' with id '{task.get_id()}' to {task.get_url()}")
            tasks.append(task)
        sleeper = compute_data_service.submit_compute_unit({"executable": "/bin/sleep", "arguments": ["30"]})

        # what ps shows of this pilot while a unit runs
        deadline = time.time() + 20
        while sleeper.get_state() != "Running" and time.time() < deadline:
            time.sleep(0.1)
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
        ps_lines = [line for line in ps.splitlines() if pilotjob.get_id() in line]
        sleeper.cancel()

        print("Waiting for tasks to finish...")
        compute_data_service.wait()

        try:
            pilot.PilotComputeService(f"redis://wrong-{REDIS_PWD}-x@{REDIS_HOST}").create_pilot(pilot_description)
            wrong = "no error"
        except pilot.PilotError as ex:
            wrong = f"PilotError: {ex}"
        except Exception as ex:
            wrong = f"{type(ex).__name__}: {ex}"
        print(f"With a wrong password: {wrong}")

        outputs = []
        for task in tasks:
            with open(os.path.join(task.get_local_working_directory(), "stdout.txt")) as f:
                outputs.append(f.read().strip())
        result = {
            "done": [task.get_state() == "Done" for task in tasks],
            "outputs": outputs,
            "urls": [pilot_compute_service.get_url(), pilotjob.get_url(), compute_data_service.get_url()]
            + [task.get_url() for task in tasks] + [task.url for task in tasks],
            "details": [str(pilotjob.get_details()), str(compute_data_service.get_details())]
            + [str(task.get_details()) for task in tasks],
            "ps": ps_lines,
            "wrong": wrong,
            "sandbox": os.path.dirname(tasks[0].get_local_working_directory()),
        }
        print("RESULT " + json.dumps(result))
        return 0
    except Exception as ex:
        print(f"AN ERROR OCCURRED: {ex}")
        traceback.print_exc()
        return -1
    finally:
        print("Terminating BigJob...")
        if compute_data_service is not None:
            compute_data_service.cancel()
        if pilot_compute_service is not None:
            pilot_compute_service.cancel()


if __name__ == "__main__":
    sys.exit(main())
