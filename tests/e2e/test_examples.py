"""Each example, end to end: a real server on 127.0.0.1 and real clients."""

from __future__ import annotations

import importlib
import json
import pathlib
import re
import sys
import typing as t

import httpx
import pytest
from support.servers import ROOT, SERVERS, LiveServer, ServerProcess
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


def recv_json(conn: ClientConnection) -> dict[str, str]:
    return t.cast("dict[str, str]", json.loads(conn.recv(TIMEOUT)))


def test_chat_rooms() -> None:
    from examples.chat.app import app, rooms

    with LiveServer(app.asgi_app) as srv:
        alice = login(srv, "/login", name="alice")
        bob = login(srv, "/login", name="bob")
        with ws(srv.ws_url + "/ws/lobby", alice) as a:
            assert recv_json(a) == {"user": "", "text": "alice joined lobby"}
            with ws(srv.ws_url + "/ws/lobby", bob) as b, ws(srv.ws_url + "/ws/other", bob) as elsewhere:
                assert recv_json(b) == {"user": "", "text": "bob joined lobby"}
                assert recv_json(a) == {"user": "", "text": "bob joined lobby"}
                assert recv_json(elsewhere) == {"user": "", "text": "bob joined other"}
                a.send("hi bob")
                assert recv_json(a) == {"user": "alice", "text": "hi bob"}
                assert recv_json(b) == {"user": "alice", "text": "hi bob"}
                b.send("hi alice")
                assert recv_json(b) == {"user": "bob", "text": "hi alice"}
                assert recv_json(a) == {"user": "bob", "text": "hi alice"}
                elsewhere.send("anyone?")
                assert recv_json(elsewhere) == {"user": "bob", "text": "anyone?"}
            # bob left the lobby; the other room's message never reached alice
            assert recv_json(a) == {"user": "", "text": "bob left lobby"}
        assert refused_status(srv.ws_url + "/ws/lobby") == 401
    assert rooms == {}


def test_chat_pages_need_login() -> None:
    from examples.chat.app import app

    with LiveServer(app.asgi_app) as srv:
        with httpx.Client(base_url=srv.http_url, trust_env=False, timeout=TIMEOUT) as client:
            assert client.get("/").headers["location"] == "/login"
            client.post("/login", data={"name": "carol"})
            page = client.get("/")
            assert page.status_code == 200 and "carol" in page.text


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
        found.append((match.group(1).split(), int(port.group(1)) if port else None))
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
