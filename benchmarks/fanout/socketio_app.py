"""python-socketio: ``AsyncServer`` with ``AsyncRedisManager`` as an ASGI app (``socketio_app:application``).

A client enters the room with a ``join`` event (acknowledged); the publisher
emits ``m`` events to the room through a write-only ``AsyncRedisManager`` on
the Redis named by ``FANOUT_REDIS_URL``.
"""

from __future__ import annotations

import os

import socketio

from .common import GROUP

URL = os.environ.get("FANOUT_REDIS_URL", "redis://127.0.0.1:6379/0")

sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(URL))


@sio.on("join")  # type: ignore[untyped-decorator,unused-ignore]
async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, GROUP)
    return True


application = socketio.ASGIApp(sio)
