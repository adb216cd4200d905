"""BigJob tutorial style chained ensemble: 'A' tasks, and for every 'A' task found Done a 'B'
task whose environment takes values from that A task (the ComputeUnit itself, as the tutorial
passes it, and its working directory), and which reads the A task's output file."""

import json
import os
import sys
import time
import traceback

import pilot

COORD = os.environ.get("COORD")
WORKDIR = os.environ["WORKDIR"]
NUMBER_JOBS = 3


def main():
    pilot_compute_service = None
    try:
        pilot_description = pilot.PilotComputeDescription()
        pilot_description.service_url = "fork://localhost"
        pilot_description.number_of_processes = NUMBER_JOBS
        pilot_description.working_directory = WORKDIR
        pilot_description.walltime = 10
        pilot_compute_service = pilot.PilotComputeService(COORD)
        pilotjob = pilot_compute_service.create_pilot(pilot_description)

        task_set_A = []
        for i in range(NUMBER_JOBS):
            task_desc = pilot.ComputeUnitDescription()
            task_desc.executable = "/bin/echo"
            task_desc.arguments = ["I am an $TASK_SET task with id $TASK_NO"]
            task_desc.environment = {"TASK_SET": "A", "TASK_NO": i}
            task_desc.number_of_processes = 1
            task_desc.output = "A-stdout.txt"
            task_desc.error = "A-stderr.txt"
            task = pilotjob.submit_compute_unit(task_desc)
            print(f"* Submitted 'A' task '{i}' with id '{task.get_id()}'")
            task_set_A.append(task)

        # chaining: submit a 'B' task when an 'A' task is Done
        task_set_B = []
        expected = []
        waiting = list(task_set_A)
        deadline = time.time() + 60
        while waiting:
            if time.time() > deadline:
                raise RuntimeError(f"'A' tasks not Done: {[t.get_state() for t in waiting]}")
            for a_task in list(waiting):
                if a_task.get_state() == "Done":
                    print(f"One 'A' task {a_task.get_id()} finished. Launching a 'B' task.")
                    task_desc = pilot.ComputeUnitDescription()
                    task_desc.executable = "echo"
                    task_desc.arguments = ["$TASK_NO", ";", "cat", "$A_DIR/A-stdout.txt"]
                    task_desc.environment = {"TASK_SET": "B", "TASK_NO": a_task,
                                             "A_DIR": a_task.get_local_working_directory()}
                    task_desc.number_of_processes = 1
                    task_desc.output = "B-stdout.txt"
                    task_desc.error = "B-stderr.txt"
                    task = pilotjob.submit_compute_unit(task_desc)
                    task_set_B.append(task)
                    expected.append(str(a_task) + "\n" + "I am an A task with id %d" % task_set_A.index(a_task))  # noqa: UP031
                    waiting.remove(a_task)
            time.sleep(0.1)

        print("Waiting for 'B' tasks to finish...")
        pilotjob.wait()
        outputs = []
        for task in task_set_B:
            with open(os.path.join(task.get_local_working_directory(), "B-stdout.txt")) as f:
                outputs.append(f.read().strip())
        result = {
            "done": [task.get_state() == "Done" for task in task_set_A + task_set_B],
            "outputs": outputs,
            "expected": expected,
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
