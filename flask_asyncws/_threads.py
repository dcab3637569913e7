"""Sync handlers in a thread of their own (``ASYNCWS_SYNC_HANDLER_MODE = "thread"``)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import typing as t

from ._portal import Portal, settle
from ._websocket import Websocket, WebsocketDisconnect


async def run_handler_in_thread(ws: Websocket, handler: t.Callable[..., t.Any], kwargs: dict[str, t.Any]) -> t.Any:
    """Run a sync handler in a thread of its own (``ASYNCWS_SYNC_HANDLER_MODE = "thread"``).

    For handlers that block in ways ``run_sync`` cannot wrap. Websocket calls
    from the thread are carried to the loop. The client leaving does not
    cancel this task, which only waits for the thread: the thread learns of
    it from the websocket (a receive returns the messages sent before it
    first), or at a wait on anything else, as a greenlet handler would.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[t.Any] = loop.create_future()
    context = contextvars.copy_context()
    portal = Portal(loop, owner=ws)

    def target() -> None:
        try:
            with portal:
                outcome = (True, context.run(handler, **kwargs))
        except BaseException as exc:
            outcome = (False, exc)
        settle(loop, done, *outcome)

    def departed() -> None:
        portal.depart(ws.disconnect or WebsocketDisconnect(1006))

    on_disconnect, ws.on_disconnect = ws.on_disconnect, departed
    try:
        threading.Thread(target=target, name=f"flask_asyncws {ws.path!r}", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            portal.interrupt(ws.disconnect or WebsocketDisconnect(1001, "server shutting down"))
            while not done.done():  # never leave the thread running on popped contexts
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    continue
                except BaseException:
                    break
            raise
    finally:
        ws.on_disconnect = on_disconnect  # no cycle through departed()
