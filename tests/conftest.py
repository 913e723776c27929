"""Shared fixtures: each tier's fixtures live in tests/support and are registered here."""

pytest_plugins = [
    "tests.support.simulator_fixtures",
    "tests.support.cluster_fixtures",
    "tests.support.operator_fixtures",
]
