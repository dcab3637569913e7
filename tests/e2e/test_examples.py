"""Each example, end to end: a real server on 127.0.0.1 and real clients."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import pathlib
import re
import sys
import time
import typing as t

import httpx
import pytest
from support.servers import ROOT, SERVERS, LiveServer, ServerProcess, free_port
from support.versions import REDIRECT_STATUS
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

TIMEOUT = 10


def ws(url: str, cookie: str | None = None) -> ClientConnection:
    headers = {"Cookie": f"session={cookie}"} if cookie else None
    return connect(url, additional_headers=headers, proxy=None, open_timeout=TIMEOUT, close_timeout=2)


def refused_status(url: str, cookie: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        ws(url, cookie).close()
    return info.value.response.status_code


def login(srv: LiveServer, path: str, **form: str) -> str:
    with httpx.Client(base_url=srv.http_url, trust_env=False, timeout=TIMEOUT) as client:
        response = client.post(path, data=form)
        assert response.status_code == REDIRECT_STATUS, response.text
        return client.cookies["session"]


# -- echo ---------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("path", ["/echo", "/aecho"])
def test_echo(server: str, path: str) -> None:
    from examples.echo.app import app

    with LiveServer(app.asgi_app, server) as srv:
        with ws(srv.ws_url + path) as conn:
            for message in ("hello", b"\x00binary\xff", "é" * 1000):
                conn.send(message)
                assert conn.recv(TIMEOUT) == message
        page = httpx.get(srv.http_url + "/", trust_env=False, timeout=TIMEOUT)
        assert page.status_code == 200 and "/echo" in page.text


# -- chat ---------------------------------------------------------------------


def recv_json(conn: ClientConnection, timeout: float = TIMEOUT) -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", json.loads(conn.recv(timeout)))


def received(conn: ClientConnection, n: int, timeout: float = TIMEOUT) -> list[dict[str, t.Any]]:
    """The next ``n`` messages, each without what changes from run to run: the
    server's timestamps (checked to be now) and the worker's process id."""
    messages = []
    for _ in range(n):
        message = recv_json(conn, timeout)
        if "time" in message:
            assert abs(message.pop("time") / 1000 - time.time()) < 60, message
        if "at" in message:
            assert abs(message.pop("at") - time.time()) < 60, message
        message.pop("worker", None)
        messages.append(message)
    return messages


def welcome(user: str, room: str) -> dict[str, str]:
    return {"type": "welcome", "user": user, "room": room}


def notice(text: str) -> dict[str, str]:
    return {"type": "notice", "text": text}


def members(**counts: int) -> dict[str, t.Any]:
    return {"type": "members", "members": counts}


def said(user: str, text: str) -> dict[str, str]:
    return {"type": "message", "user": user, "text": text}


def occupancy(room: str, **presence: int) -> dict[str, t.Any]:
    """What ``GET /rooms/<room>`` answers."""
    return {"room": room, "count": sum(presence.values()), "presence": presence}


def test_chat_rooms() -> None:
    """In process (no broker, one worker): rooms, members, messages, announcements, and nothing left behind."""
    from examples.chat.app import app

    assert app.config["ASYNCWS_BROKER_URL"] is None
    with LiveServer(app.asgi_app) as srv, httpx.Client(base_url=srv.http_url, trust_env=False, timeout=TIMEOUT) as http:
        alice = login(srv, "/login", name="alice")
        bob = login(srv, "/login", name="bob")
        with ws(srv.ws_url + "/ws/lobby", alice) as a:
            welcomed = recv_json(a)
            assert welcomed["worker"] == os.getpid()  # this process: the server runs in a thread of it
            assert received(a, 2) == [notice("alice joined"), members(alice=1)]
            with ws(srv.ws_url + "/ws/lobby", bob) as b, ws(srv.ws_url + "/ws/other", bob) as elsewhere:
                assert received(b, 3) == [welcome("bob", "lobby"), notice("bob joined"), members(alice=1, bob=1)]
                assert received(a, 2) == [notice("bob joined"), members(alice=1, bob=1)]
                assert received(elsewhere, 3) == [welcome("bob", "other"), notice("bob joined"), members(bob=1)]

                a.send("hi bob")
                b.send("   ")  # blank: not published
                b.send("  hi alice\n")
                for conn in (a, b):
                    assert received(conn, 2) == [said("alice", "hi bob"), said("bob", "hi alice")]
                elsewhere.send("anyone?")
                assert received(elsewhere, 1) == [said("bob", "anyone?")]

                assert http.post("/rooms/lobby/announce", json={"text": " Closing at six "}).status_code == 204
                for conn in (a, b):
                    assert received(conn, 1) == [{"type": "announcement", "text": "Closing at six"}]
                assert http.get("/rooms/lobby").json() == occupancy("lobby", alice=1, bob=1)
                assert http.get("/rooms/other").json() == occupancy("other", bob=1)

                with ws(srv.ws_url + "/ws/lobby", alice) as second_tab:  # counted twice
                    assert received(second_tab, 3) == [
                        welcome("alice", "lobby"), notice("alice joined"), members(alice=2, bob=1)
                    ]  # fmt: skip
                    for conn in (a, b):
                        assert received(conn, 2) == [notice("alice joined"), members(alice=2, bob=1)]
                for conn in (a, b):
                    assert received(conn, 2) == [notice("alice left"), members(alice=1, bob=1)]
            # bob's connections ended; what was said in the other room never reached alice
            assert received(a, 2) == [notice("bob left"), members(alice=1)]
        deadline = time.monotonic() + TIMEOUT
        while http.get("/rooms/lobby").json()["count"] and time.monotonic() < deadline:
            time.sleep(0.02)  # alice's handler leaves as it ends, after her close
        assert http.get("/rooms/lobby").json() == occupancy("lobby")

        assert refused_status(srv.ws_url + "/ws/lobby") == 401
        assert refused_status(srv.ws_url + "/ws/no%20spaces", alice) == 404
        assert http.get("/rooms/no%20spaces").status_code == 404
        for body in ({"text": ""}, {"text": 3}, ["text"]):
            response = http.post("/rooms/lobby/announce", json=body)
            assert response.status_code == 400 and "text" in response.json()["error"], response.text
        assert http.post("/rooms/lobby/announce", content=b"not json").status_code == 400


def test_chat_pages_need_login() -> None:
    from examples.chat.app import app

    with LiveServer(app.asgi_app) as srv:
        with httpx.Client(base_url=srv.http_url, trust_env=False, timeout=TIMEOUT) as client:
            assert client.get("/").headers["location"] == "/login"
            assert client.get("/static/chat.css").status_code == 200  # served by the app, no CDN
            client.post("/login", data={"name": "<carol>"})
            page = client.get("/?room=kitchen")
            assert page.status_code == 200 and "&lt;carol&gt;" in page.text and "<carol>" not in page.text
            assert 'data-socket="/ws/kitchen"' in page.text
            assert client.get("/?room=no%20such").status_code == 400


def broker_command() -> tuple[dict[str, str], list[str]]:
    """The chat docstring's command for two workers on Redis: its environment and its command."""
    doc = importlib.import_module("examples.chat.app").__doc__ or ""
    [line] = [line for line in doc.splitlines() if "ASYNCWS_BROKER_URL=" in line]
    words = line.split(": ", 1)[1].split()
    env = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_]+=\S+", word))
    return env, words[len(env) :]


def test_chat_on_two_workers_with_redis() -> None:
    """The docstring's command as written (``hypercorn --workers 2`` with Redis), on a free port and a real
    redis-server: members on both workers see each other, their messages and the announcements."""
    from support.redis_server import RedisServer

    env, command = broker_command()
    assert env == {"ASYNCWS_BROKER_URL": "redis://localhost:6379/0"}
    assert command == ["hypercorn", "--workers", "2", "examples.chat.app:app.asgi_app"], command
    port = free_port()
    base = f"127.0.0.1:{port}"
    with RedisServer() as redis:
        argv = [sys.executable, "-m", "hypercorn", "--bind", base, *command[1:]]
        with (
            ServerProcess(argv, cwd=ROOT, env={"ASYNCWS_BROKER_URL": redis.url}, exit_timeout=TIMEOUT) as server,
            httpx.Client(base_url=f"http://{base}", trust_env=False, timeout=TIMEOUT) as http,
            contextlib.ExitStack() as stack,
        ):
            for _worker in range(2):
                server.wait_for(rf"Running on http://127\.0\.0\.1:{port}", 3 * TIMEOUT)
            cookies = {}
            for name in ("alice", "bob"):
                assert http.post("/login", data={"name": name}).status_code == REDIRECT_STATUS
                cookies[name] = http.cookies["session"]
                http.cookies.clear()
            url = f"ws://{base}/ws/lobby"
            a = stack.enter_context(ws(url, cookies["alice"]))
            alice_worker = recv_json(a)["worker"]
            # Each connection lands on either worker: bob connects until one lands on the other worker.
            bobs: list[tuple[ClientConnection, int]] = []
            while len(bobs) < 40 and all(worker == alice_worker for _, worker in bobs):
                conn = stack.enter_context(ws(url, cookies["bob"]))
                bobs.append((conn, recv_json(conn)["worker"]))
            [b] = [conn for conn, worker in bobs if worker != alice_worker]
            print(f"\nalice on worker {alice_worker}, bob's connections on {[worker for _, worker in bobs]}")

            lobby = http.get("/rooms/lobby").json()
            assert lobby == occupancy("lobby", alice=1, bob=len(bobs))
            a.send("from the first worker")
            assert next_message(b, "message") == said("alice", "from the first worker")
            b.send("from the second worker")
            assert next_message(a, "message") == said("alice", "from the first worker")  # her own, first
            assert next_message(a, "message") == said("bob", "from the second worker")
            assert http.post("/rooms/lobby/announce", json={"text": "to all"}).status_code == 204
            for conn in (a, b):
                assert next_message(conn, "announcement") == {"type": "announcement", "text": "to all"}

            # Redis stops: the websockets stay open, a message not sent says so, HTTP answers 503.
            redis.stop()
            a.send("lost?")
            assert next_message(a, "error") == {
                "type": "error",
                "text": "Not sent: the server lost its broker. Try again soon.",
            }
            response = http.get("/rooms/lobby")
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "The chat's broker is unavailable; try again soon."}
            # Redis back: each worker subscribes again by itself, after a backoff of its own; until it
            # has, what is published does not reach its members (at most once across an outage).
            redis.start()
            deadline = time.monotonic() + 3 * TIMEOUT
            for attempt in itertools.count():
                assert time.monotonic() < deadline, "the room did not come back after Redis restarted"
                text = f"back {attempt}"
                if http.post("/rooms/lobby/announce", json={"text": text}).status_code != 204:
                    time.sleep(0.1)
                    continue
                try:
                    for conn in (a, b):
                        while next_message(conn, "announcement", timeout=1)["text"] != text:
                            pass  # one that reached it before the other worker was back
                    break
                except TimeoutError:
                    continue
            b.send("still here")
            for conn in (a, b):
                assert next_message(conn, "message") == said("bob", "still here")


def next_message(conn: ClientConnection, kind: str, timeout: float = TIMEOUT) -> dict[str, t.Any]:
    """The next message of type ``kind``, skipping the others (without its timestamps)."""
    while True:
        [message] = received(conn, 1, timeout)
        if message["type"] == kind:
            return message


# -- auth ---------------------------------------------------------------------


def test_auth_refuses_before_upgrade() -> None:
    from examples.auth.app import app

    with LiveServer(app.asgi_app) as srv:
        assert refused_status(srv.ws_url + "/ws/whoami") == 401
        assert refused_status(srv.ws_url + "/admin/events") == 401
        with httpx.Client(base_url=srv.http_url, trust_env=False, timeout=TIMEOUT) as client:
            assert client.get("/").status_code == REDIRECT_STATUS  # pages still redirect to the login form

        bob = login(srv, "/login", username="bob", password="builder")
        with ws(srv.ws_url + "/ws/whoami", bob) as conn:
            assert conn.recv(TIMEOUT) == "you are bob"
            conn.send("ping")
            assert conn.recv(TIMEOUT) == "bob: ping"
        assert refused_status(srv.ws_url + "/admin/events", bob) == 403

        alice = login(srv, "/login", username="alice", password="wonderland")
        with ws(srv.ws_url + "/admin/events", alice) as conn:
            assert conn.recv(TIMEOUT) == "admin feed for alice"
            conn.send("x")
            assert conn.recv(TIMEOUT) == "ack x"


# -- migrating from Flask-Sock ------------------------------------------------


def transcript(base: str) -> list[t.Any]:
    """What a client sees from the example app; identical before and after."""
    seen: list[t.Any] = []
    with ws(base + "/echo") as conn:
        for message in ("one", b"two"):
            conn.send(message)
            seen.append(conn.recv(TIMEOUT))
        conn.send("close")
        with pytest.raises(ConnectionClosed):
            conn.recv(TIMEOUT)
        seen.append(("closed", conn.close_code))
    with ws(base + "/greet?name=ada") as conn:
        seen.append(conn.recv(TIMEOUT))
    with ws(base + "/countdown/3") as conn:
        seen.extend(conn.recv(TIMEOUT) for _ in range(4))
    with ws(base + "/countdown/1000") as conn:
        seen.append(conn.recv(TIMEOUT))
        conn.send("stop")
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(TIMEOUT)  # numbers already in flight, then the close
        seen.append(("closed", conn.close_code, conn.close_reason))
    return seen


EXPECTED = [
    "one",
    b"two",
    ("closed", 1000),
    "hello ada",
    "3",
    "2",
    "1",
    "liftoff",
    "1000",
    ("closed", 1000, "stopped"),
]


def test_flask_sock_app_before() -> None:
    """The starting point, run with the command in its docstring (gunicorn
    with threads, as Flask-Sock documents) on a free port."""
    [(command, _)] = run_commands(importlib.import_module("examples.migrate_from_flask_sock.before").__doc__ or "")
    assert command[0] == "gunicorn", command
    options = ["--bind", "127.0.0.1:0", "--graceful-timeout", "1"]
    argv = [sys.executable, "-m", command[0], *options, *command[1:]]
    with ServerProcess(argv, cwd=ROOT, exit_timeout=TIMEOUT) as gunicorn:
        match = gunicorn.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", 3 * TIMEOUT)
        assert transcript(f"ws://127.0.0.1:{match.group(1)}") == EXPECTED


@pytest.mark.parametrize("step", ["compat", "after"])
def test_flask_sock_app_migrated(step: str) -> None:
    module = __import__(f"examples.migrate_from_flask_sock.{step}", fromlist=["app"])
    with LiveServer(module.app.asgi_app) as srv:
        assert transcript(srv.ws_url) == EXPECTED


# -- the instructions ---------------------------------------------------------

MIGRATION = ("before", "compat", "after")
EXAMPLES = ["echo.app", "chat.app", "auth.app"] + [f"migrate_from_flask_sock.{step}" for step in MIGRATION]


def run_commands(text: str) -> list[tuple[list[str], int | None]]:
    """Each ``Run:``/``or:`` command in ``text`` with the port its note names."""
    found = []
    for match in re.finditer(r"^ ?(?:Run|or): (.+?)(?:\s{2,}\((.*)\))?$", text, re.MULTILINE):
        port = re.search(r"://127\.0\.0\.1:(\d+)", match.group(2) or "")
        command = match.group(1).split()
        while re.fullmatch(r"[A-Z_]+=\S*", command[0]):  # NAME=value: the environment, not the command
            command.pop(0)
        found.append((command, int(port.group(1)) if port else None))
    return found


def default_port(command: list[str]) -> int:
    """The port ``command`` serves on when followed literally, from each server's own default."""
    if command[0] == "flask":
        assert command[-2:] == ["asyncws", "run"], f"{command}: Werkzeug (flask run) serves no ASGI app"
        from flask_asyncws.cli import run_command

        return next(p.default for p in run_command.params if p.name == "port")  # type: ignore[no-any-return]
    if command[0] == "hypercorn":
        from hypercorn.config import Config

        return int(Config().bind[0].rpartition(":")[2])
    assert command[0] == "gunicorn", command
    from gunicorn.config import Bind

    return int(Bind.default[0].rpartition(":")[2])


def target(command: list[str]) -> t.Any:
    """The object the command serves: ``module:attr.attr`` or ``--app module``."""
    spec = command[command.index("--app") + 1] + ":app" if "--app" in command else command[-1]
    module, _, attrs = spec.partition(":")
    obj: t.Any = importlib.import_module(module)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


@pytest.mark.parametrize("example", EXAMPLES)
def test_instructions_name_what_their_command_serves(example: str) -> None:
    """Each command in an example's docstring serves that example, on the port its note says."""
    commands = run_commands(importlib.import_module(f"examples.{example}").__doc__ or "")
    assert commands, f"{example} has no Run: line"
    for command, port in commands:
        assert port in (None, default_port(command)), (command, port)
        assert target(command) is not None


def test_examples_readme_commands_and_addresses() -> None:
    readme = (pathlib.Path(__file__).parents[2] / "examples" / "README.md").read_text()
    for command in re.findall(r"`((?:hypercorn|gunicorn|flask) [^`]+)`", readme):
        if "…" not in command:
            assert target(command.split()) is not None, command
    assert f"http://127.0.0.1:{default_port(['flask', '--app', 'x', 'asyncws', 'run'])} for `flask" in readme
    assert f"http://127.0.0.1:{default_port(['hypercorn', 'x'])} for\n`hypercorn`, `gunicorn`" in readme
    assert default_port(["gunicorn", "x"]) == default_port(["hypercorn", "x"])
    makefile = (pathlib.Path(__file__).parents[2] / "Makefile").read_text()
    assert f"BIND ?= 127.0.0.1:{default_port(['hypercorn', 'x'])}\n" in makefile
    assert "--bind $(BIND) examples.echo.app:app.asgi_app" in makefile
