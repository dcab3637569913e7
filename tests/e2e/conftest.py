"""Fixtures of the groups tests: a real ``redis-server`` and the clients a test opens."""

from __future__ import annotations

import typing as t

import pytest
from support.groups import Clients
from support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> t.Iterator[RedisServer]:
    """A ``redis-server`` of this test's own on a free port, stopped after it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def clients() -> t.Iterator[Clients]:
    """Websocket clients, closed after the test."""
    with Clients() as stack:
        yield stack
