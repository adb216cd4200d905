"""The data side: PilotDataService, PilotData and DataUnit (``objects``, ``records``), verified
transfers (``transfer``), the agent's staging (``staging``) and the local backend (``local``, the
built-in plugin ``local-data``, which the rest reaches only through ``Session.data_backend``).

This package imports nothing heavy: the agent loads ``pilot.data.local`` as a built-in plugin.
"""
