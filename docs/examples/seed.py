import os
from pilot import PilotComputeService, ComputeDataService, State

pilot_compute_service = PilotComputeService()

# create pilot job service and initiate a pilot job
pilot_compute_description = {
                         "service_url": 'fork://localhost',
                         "number_of_processes": 1,
                         "working_directory": os.path.join(os.getcwd(),"work"),
                         'affinity_datacenter_label': "eu-de-south",
                         'affinity_machine_label': "mymachine"
                        }

pilotjob = pilot_compute_service.create_pilot(pilot_compute_description=pilot_compute_description)

compute_data_service = ComputeDataService()
compute_data_service.add_pilot_compute_service(pilot_compute_service)

# start work unit
compute_unit_description = {
        "executable": "/bin/date",
        "arguments": [""],
        "number_of_processes": 1,
        "output": "stdout.txt",
        "error": "stderr.txt",
        "affinity_datacenter_label": "eu-de-south",
        "affinity_machine_label": "mymachine"
}

compute_unit = compute_data_service.submit_compute_unit(compute_unit_description)

compute_data_service.wait()

compute_data_service.cancel()

# not in the seed: show what happened
print("unit", compute_unit.get_state(), "exit code", compute_unit.get_exit_code())
print("output:", open(os.path.join(compute_unit.get_local_working_directory(), "stdout.txt")).read().strip())
