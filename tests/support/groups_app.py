"""The app the groups tests serve in separate processes (and the publisher imports).

Serve it with ``hypercorn support.groups_app:asgi_app`` (``tests`` on the path).
Its groups configuration comes from the environment, under the config keys'
own names: ``ASYNCWS_BROKER_URL``, ``ASYNCWS_BROKER_PREFIX``,
``ASYNCWS_OUTBOX_LIMIT`` and ``ASYNCWS_PRESENCE_TTL``.

- ``/ws/<room>`` (a sync handler) and ``/aws/<room>`` (its async twin) join
  ``room`` with the ``user`` query argument as presence (and the groups listed
  in ``also``, comma-separated), send ``hello:`` and a JSON object (the worker's
  pid, the connection's groups), then answer each message (see :func:`answer`):
  ``echo:`` and the message by default. What the group publishes arrives
  unprefixed: the library sends it, the handler forwards nothing. ``/listen/<room>``
  joins, says hello and never reads (a feed).
- ``POST /publish/<room>`` publishes the body (text; binary with ``?kind=bytes``;
  the JSON value with ``?kind=json``); ``GET /count/<room>`` answers
  ``{"count": ..., "presence": ...}``; ``/apublish`` and ``/acount`` are their
  async twins. A :class:`~flask_asyncws.BrokerUnavailable` answers 503 with
  what it said and how long it took.
- A teardown function records, for a connection with an ``id`` query argument,
  the count and presence of its room and its groups as the teardown sees them;
  ``GET /teardown/<id>`` answers it.
- ``GET /pid`` answers the worker's pid; ``/echo`` echoes (the servers' ready check).
- :func:`create_app` makes the same app's settings in a factory app, for the
  publisher's calls inside an app context.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import typing as t

from flask import Flask, Response, jsonify, request

from flask_asyncws import AsyncWS, BrokerUnavailable, websocket


def configure(app: Flask) -> Flask:
    """``app`` with the groups settings the environment gives."""
    for key, convert in (
        ("ASYNCWS_BROKER_URL", str),
        ("ASYNCWS_BROKER_PREFIX", str),
        ("ASYNCWS_OUTBOX_LIMIT", int),
        ("ASYNCWS_PRESENCE_TTL", float),
    ):
        if os.environ.get(key):
            app.config[key] = convert(os.environ[key])
    return app


app = configure(Flask(__name__))
asyncws = AsyncWS(app)

#: The extension of :func:`create_app`'s apps: made without an app, as a factory app's is.
ext = AsyncWS()


def create_app() -> Flask:
    """The same settings in an app made by a factory (its ``ext`` calls need the app's context)."""
    factory_app = configure(Flask("groups_factory"))
    ext.init_app(factory_app)
    return factory_app


#: What the teardown function saw, by the connection's ``id`` query argument.
teardowns: dict[str, dict[str, t.Any]] = {}


def hello() -> str:
    return "hello:" + json.dumps({"pid": os.getpid(), "groups": sorted(websocket.groups)})


def extra_groups() -> list[str]:
    return [group for group in websocket.args.get("also", "").split(",") if group]


def answer(message: str | bytes) -> tuple[str, str]:
    """What a member does with ``message``: (action, argument).

    ``return`` returns from the handler, ``error`` raises, ``join:<group>`` and
    ``leave:<group>`` join and leave, ``joinpub:<group>`` joins and at once
    publishes ``first in <group>`` to it, ``groups`` answers the connection's groups,
    ``publish:<text>`` publishes ``text`` to the room from the handler,
    ``block:<seconds>`` blocks the worker's event loop that long (a sync handler
    runs on it) before its echo; anything else is echoed.
    """
    if isinstance(message, bytes):
        return "echo", repr(message)
    for action in ("join", "joinpub", "leave", "publish", "block"):
        if message.startswith(action + ":"):
            return action, message[len(action) + 1 :]
    if message in ("return", "error", "groups"):
        return message, ""
    return "echo", message


@app.websocket("/ws/<room>")
def member(room: str) -> None:
    websocket.join(room, presence=websocket.args.get("user"))
    for group in extra_groups():
        websocket.join(group)
    websocket.send(hello())
    while True:
        action, argument = answer(websocket.receive())
        if action == "return":
            return
        if action == "error":
            raise RuntimeError("the handler fails on purpose")
        if action == "join":
            websocket.join(argument)
        elif action == "joinpub":
            websocket.join(argument)
            asyncws.publish(argument, f"first in {argument}")
        elif action == "leave":
            websocket.leave(argument)
        elif action == "publish":
            asyncws.publish(room, argument)
        elif action == "block":
            time.sleep(float(argument))
        elif action == "groups":
            websocket.send("groups:" + json.dumps(sorted(websocket.groups)))
            continue
        websocket.send(f"echo:{argument}" if action == "echo" else f"echo:{action}:{argument}")


@app.websocket("/aws/<room>")
async def amember(room: str) -> None:
    await websocket.join(room, presence=websocket.args.get("user"))
    for group in extra_groups():
        await websocket.join(group)
    await websocket.send(hello())
    while True:
        action, argument = answer(await websocket.receive())
        if action == "return":
            return
        if action == "error":
            raise RuntimeError("the handler fails on purpose")
        if action == "join":
            await websocket.join(argument)
        elif action == "joinpub":
            await websocket.join(argument)
            await asyncws.publish(argument, f"first in {argument}")
        elif action == "leave":
            await websocket.leave(argument)
        elif action == "publish":
            await asyncws.publish(room, argument)
        elif action == "block":
            time.sleep(float(argument))
        elif action == "groups":
            await websocket.send("groups:" + json.dumps(sorted(websocket.groups)))
            continue
        await websocket.send(f"echo:{argument}" if action == "echo" else f"echo:{action}:{argument}")


@app.websocket("/listen/<room>")
async def listen(room: str) -> None:
    """A member that never reads (a feed): it joins, says hello, and waits until the connection ends."""
    await websocket.join(room, presence=websocket.args.get("user"))
    await websocket.send(hello())
    await asyncio.Event().wait()


@app.teardown_websocket
def record(error: BaseException | None) -> None:
    ident = websocket.args.get("id")
    room = (websocket.view_args or {}).get("room")
    if ident is None or room is None:
        return
    seen: dict[str, t.Any] = {"groups": sorted(websocket.groups), "error": repr(error)}
    try:
        seen["count"] = asyncws.count(room)
        seen["presence"] = asyncws.presence(room)
    except Exception as exc:
        seen["failed"] = repr(exc)
    teardowns[ident] = seen


@app.get("/teardown/<ident>")
def teardown_seen(ident: str) -> Response:
    return jsonify(teardowns.get(ident))


def published_body() -> t.Any:
    kind = request.args.get("kind", "text")
    if kind == "bytes":
        return request.get_data()
    if kind == "json":
        return json.loads(request.get_data())
    return request.get_data(as_text=True)


def unavailable(exc: BrokerUnavailable, started: float) -> tuple[Response, int]:
    return jsonify(
        error=type(exc).__name__,
        connection_error=isinstance(exc, ConnectionError),
        message=str(exc),
        seconds=time.monotonic() - started,
    ), 503


@app.post("/publish/<room>")
def publish(room: str) -> t.Any:
    started = time.monotonic()
    try:
        asyncws.publish(room, published_body())
    except BrokerUnavailable as exc:
        return unavailable(exc, started)
    return jsonify(seconds=time.monotonic() - started)


@app.get("/count/<room>")
def count(room: str) -> t.Any:
    started = time.monotonic()
    try:
        return jsonify(count=asyncws.count(room), presence=asyncws.presence(room), pid=os.getpid())
    except BrokerUnavailable as exc:
        return unavailable(exc, started)


@app.post("/apublish/<room>")
async def apublish(room: str) -> t.Any:
    """``?await=no``: the publish is not awaited (it starts at once all the same)."""
    started = time.monotonic()
    if request.args.get("await") == "no":
        pending = asyncws.publish(room, published_body())
        close = getattr(pending, "close", None)
        if close is not None:
            close()  # never awaited: no "never awaited" warning either
        return jsonify(seconds=time.monotonic() - started)
    try:
        await asyncws.publish(room, published_body())
    except BrokerUnavailable as exc:
        return unavailable(exc, started)
    return jsonify(seconds=time.monotonic() - started)


@app.get("/acount/<room>")
async def acount(room: str) -> t.Any:
    started = time.monotonic()
    try:
        number = await asyncws.count(room)
        presence = await asyncws.presence(room)
    except BrokerUnavailable as exc:
        return unavailable(exc, started)
    return jsonify(count=number, presence=presence, pid=os.getpid())


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.get("/hello")
def hello_http() -> str:
    return "hello"


@app.websocket("/echo")
def echo() -> None:
    while True:
        websocket.send(websocket.receive())


asgi_app = app.asgi_app  # type: ignore[attr-defined]
