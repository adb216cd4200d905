"""The agent: runs inside the pilot's allocation, claims units from the store and runs them.

Started as ``python -m pilot.agent --pilot <id> --store <url>`` by the resource adaptor.
"""
