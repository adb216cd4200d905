"""The data side: PilotDataService, PilotData and DataUnit (``objects``, ``units``), verified
transfers (``transfer``), the local backend (``local``) and the agent's staging (``staging``).

This package imports nothing heavy: the agent loads ``pilot.data.local`` as a built-in plugin.
"""
