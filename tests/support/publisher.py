"""A publisher outside the servers: a plain Python process, as a cron script or a task queue's worker is.

It imports the groups app (:mod:`support.groups_app`, configured from the same
environment variables as the servers) and calls ``asyncws.publish``,
``count`` and ``presence`` as plain calls: no server, no event loop of its own.

Each command is a JSON object, given as an argument or (with no arguments)
one per line on stdin; each answer is one JSON line on stdout:

- ``{"op": "publish", "group": g, "text": s}`` (or ``"bytes_hex": h``, or ``"json": value``);
- ``{"op": "sequence", "group": g, "n": n, "prefix": p, "size": s, "start": i}``:
  publishes ``p<i>`` … ``p<i+n-1>`` in order, each padded with dots to ``s``
  characters;
  answers the longest single publish;
- ``{"op": "count", "group": g}``, ``{"op": "presence", "group": g}``.

With ``"factory": true`` a command runs in the app context of an app made by
:func:`support.groups_app.create_app`, with that app's extension (as a task
queue's worker or ``flask shell`` runs it). An exception answers ``{"ok": false, "error": ..., "message": ...}`` with
whether it is a ``ConnectionError`` and how long the call took.
"""

from __future__ import annotations

import json
import sys
import time
import typing as t

from flask import Flask

from support.groups_app import asyncws, create_app, ext

#: The factory app, made at the first command that asks for it.
factory: list[Flask] = []


def call(command: dict[str, t.Any], name: str, *args: t.Any) -> t.Any:
    """``asyncws.<name>(*args)``; with ``"factory": true``, a factory app's extension's, in its app context."""
    if not command.get("factory"):
        return getattr(asyncws, name)(*args)
    if not factory:
        factory.append(create_app())
    with factory[0].app_context():
        return getattr(ext, name)(*args)


def padded(text: str, size: int) -> str:
    return text + "." * (size - len(text))


def run(command: dict[str, t.Any]) -> dict[str, t.Any]:
    op, group = command["op"], command.get("group", "")
    started = time.monotonic()
    result: dict[str, t.Any] = {"op": op, "ok": True}
    try:
        if op == "publish":
            if "text" in command:
                message: t.Any = command["text"]
            elif "bytes_hex" in command:
                message = bytes.fromhex(command["bytes_hex"])
            else:
                message = command["json"]
            returned = call(command, "publish", group, message)
            result["returned"] = repr(returned)
        elif op == "sequence":
            longest = 0.0
            for index in range(command.get("start", 0), command.get("start", 0) + command["n"]):
                before = time.monotonic()
                call(command, "publish", group, padded(f"{command['prefix']}{index}", command.get("size", 0)))
                longest = max(longest, time.monotonic() - before)
            result["longest"] = longest
        elif op == "count":
            result["count"] = call(command, "count", group)
        elif op == "presence":
            result["presence"] = call(command, "presence", group)
        else:
            raise ValueError(f"unknown op {op!r}")
    except Exception as exc:
        result.update(
            ok=False, error=type(exc).__name__, message=str(exc), connection_error=isinstance(exc, ConnectionError)
        )
    result["seconds"] = time.monotonic() - started
    return result


def main(argv: list[str]) -> None:
    commands = argv or sys.stdin
    for line in commands:
        if line.strip():
            print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
