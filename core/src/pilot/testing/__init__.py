"""A testing kit for plugin authors: fixtures and conformance suites."""
