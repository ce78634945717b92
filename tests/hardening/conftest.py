"""Fixtures of the hardening tests: one moto server for the module's AWS cases, the session's
Azurite, and a fresh core (the handlers build one per process from the environment)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_cores() -> Iterator[None]:
    from skyscore.runtime.wiring import reset_cores

    reset_cores()
    yield
    reset_cores()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server of this module's own on a free port of 127.0.0.1."""
    from aws_moto import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def azurite_connection() -> str:
    """The session's Azurite (started on first use)."""
    from azurite import shared_azurite

    return shared_azurite().connection_string
