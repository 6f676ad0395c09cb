"""Shared fixtures live in tests/helpers/*; this file only registers them."""

pytest_plugins: list[str] = [
    "tests.helpers.bugs",
    "tests.helpers.disk",
    "tests.helpers.hostile",
    "tests.helpers.lxd",
    "tests.helpers.incus",
    "tests.helpers.registry",
    "tests.helpers.s3",
    "tests.helpers.moto",
]
