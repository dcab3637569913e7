"""Unit tests: origin policy, settings, the ASGI protocol with scopes real servers send."""

from __future__ import annotations

import asyncio
import logging
import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_asyncws import AsyncWS, await_, run_sync, websocket
from flask_asyncws._config import DEFAULTS
from flask_asyncws._origin import OriginPolicy, normalize_origin


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "example.com", True),  # non-browser client
        ("https://example.com", "example.com", True),  # TLS terminated by a proxy
        ("http://example.com", "example.com", True),
        ("https://example.com", "example.com:443", True),
        ("http://example.com:80", "example.com", True),
        ("http://example.com:8000", "example.com:8000", True),
        ("HTTP://EXAMPLE.COM:8000", "Example.com:8000", True),
        ("http://example.com:8001", "example.com:8000", False),
        ("https://example.com:8443", "example.com", False),
        ("http://evil.com", "example.com", False),
        ("http://example.com.evil.com", "example.com", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://[::1]:8001", "[::1]:8000", False),
        ("null", "example.com", False),
        ("not an origin", "example.com", False),
        ("http://example.com", None, False),
        ("http://example.com", "example.com:notaport", False),
    ],
)
def test_same_origin(origin: str | None, host: str | None, allowed: bool) -> None:
    assert OriginPolicy(None).permits(origin, host) is allowed


def test_allowed_origins() -> None:
    policy = OriginPolicy(["https://app.example:443", "http://localhost:3000", "null"])
    assert policy.permits("https://app.example", "api.example")
    assert policy.permits("http://localhost:3000", "api.example")
    assert policy.permits("null", "api.example")
    assert not policy.permits("http://localhost:3001", "api.example")
    assert OriginPolicy(["*"]).permits("http://anything", "api.example")
    assert normalize_origin("https://[::1]:443") == "https://[::1]"


@pytest.mark.parametrize(
    ("origin", "fix"),
    [
        ("https://app.example.com/chat", "'https://app.example.com'"),
        ("https://app.example.com/", "'https://app.example.com'"),
        ("https://app.example.com:8443/?room=1", "'https://app.example.com:8443'"),
        ("https://user@app.example.com", "'https://app.example.com'"),
    ],
)
def test_allowed_origin_with_a_path_is_refused_at_init_app(origin: str, fix: str) -> None:
    app = Flask(__name__)
    app.config["ASYNCWS_ALLOWED_ORIGINS"] = ["https://ok.example", origin]
    with pytest.raises(ValueError, match="ASYNCWS_ALLOWED_ORIGINS") as info:
        AsyncWS(app)
    assert f"{origin!r} is a URL, not an origin" in str(info.value)
    assert "with no path" in str(info.value) and f"write {fix}" in str(info.value)


@pytest.mark.parametrize("allowed", [["*"], "*"])
def test_allow_all_origins_as_a_list_or_a_string(allowed: t.Any) -> None:
    """``["*"]`` is the documented form; the bare string means the same."""
    app = Flask(__name__)
    app.config["ASYNCWS_ALLOWED_ORIGINS"] = allowed
    AsyncWS(app)
    policy = app.asgi_app._settings().origins
    assert policy.permits("http://anything.example", "api.example")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ASYNCWS_ALLOWED_ORIGINS", ["example.com"], "ASYNCWS_ALLOWED_ORIGINS"),
        ("ASYNCWS_MAX_MESSAGE_SIZE", -1, "ASYNCWS_MAX_MESSAGE_SIZE"),
        ("ASYNCWS_MAX_MESSAGE_SIZE", "1MB", "ASYNCWS_MAX_MESSAGE_SIZE"),
        ("ASYNCWS_MAX_QUEUE_SIZE", 0, "ASYNCWS_MAX_QUEUE_SIZE"),
        ("ASYNCWS_SYNC_HANDLER_MODE", "fiber", "ASYNCWS_SYNC_HANDLER_MODE"),
        ("ASYNCWS_HTTP_THREADS", 0, "ASYNCWS_HTTP_THREADS"),
        ("ASYNCWS_PING_INTERVAL", True, "ASYNCWS_PING_INTERVAL"),
        ("ASYNCWS_BROKER_URL", "http://localhost:6379", "ASYNCWS_BROKER_URL must be a Redis URL"),
        ("ASYNCWS_OUTBOX_LIMIT", 0, "ASYNCWS_OUTBOX_LIMIT must be a positive number of bytes"),
        ("ASYNCWS_PRESENCE_TTL", "15", "ASYNCWS_PRESENCE_TTL must be a positive number of seconds"),
        ("ASYNCWS_BROKER_PREFIX", None, "ASYNCWS_BROKER_PREFIX must be a str"),
        ("ASYNCWS_BROKER_PREFIX", "app\udc80:", "ASYNCWS_BROKER_PREFIX must be a str"),
        ("ASYNCWS_PRESENCE_TTL", float("inf"), "ASYNCWS_PRESENCE_TTL must be a positive number of seconds"),
        ("ASYNCWS_PRESENCE_TTL", float("nan"), "ASYNCWS_PRESENCE_TTL must be a positive number of seconds"),
        ("ASYNCWS_BROKER_URL", "redis://h:99999/0", "ASYNCWS_BROKER_URL redis://h:99999/0 is not a URL redis-py"),
        (
            "ASYNCWS_BROKER_URL",
            "redis://:s3cret@h:port/0",
            r"ASYNCWS_BROKER_URL redis://:\*\*\*@h:port/0 is not a URL redis-py can use: Port could not be cast",
        ),
    ],
)
def test_invalid_settings_fail_at_init_app(key: str, value: t.Any, message: str) -> None:
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ValueError, match=message):
        AsyncWS(app)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ASYNCWS_HTTP_THREADS", 0, "ASYNCWS_HTTP_THREADS must be a positive number of threads, not 0."),
        ("ASYNCWS_HTTP_THREADS", None, "ASYNCWS_HTTP_THREADS must be a positive number of threads, not None."),
        ("ASYNCWS_MAX_MESSAGE_SIZE", 0, "ASYNCWS_MAX_MESSAGE_SIZE must be a positive number of bytes or None, not 0."),
        (
            "ASYNCWS_BLOCKING_WARN_MS",
            "1",
            "ASYNCWS_BLOCKING_WARN_MS must be a positive number of milliseconds or None,",
        ),
    ],
)
def test_setting_errors_say_what_is_allowed(key: str, value: t.Any, message: str) -> None:
    """One true message: None is offered only where it is allowed."""
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ValueError) as info:
        AsyncWS(app)
    assert str(info.value).startswith(message)


def test_unknown_settings_are_named_once_at_init_app(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    app.config.update(ASYNCWS_PING_INTERVALL=25, asyncws_http_thread=4, ASYNCWS_FOO=1, ASYNCWS_PING_INTERVAL=None)
    app.config["ASYNCWS_ORIGINS"] = ["https://example.com"]
    app.config["ASYNCWS_SOCKET_FD"] = 3  # from_prefixed_env() in a process `flask asyncws run --reload` started

    with caplog.at_level(logging.WARNING, logger="flask_asyncws"):
        AsyncWS(app)

        @app.websocket("/ws")
        def handler() -> None:
            websocket.send("ok")

        with app.test_client().websocket("/ws") as ws:  # the settings are read again for the first connection
            assert ws.receive() == "ok"
    warnings = sorted(r.getMessage() for r in caplog.records if r.name == "flask_asyncws")
    assert [r.levelno for r in caplog.records if r.name == "flask_asyncws"] == [logging.WARNING] * 4
    assert warnings == [
        # Only the part after the shared prefix is compared: FOO is like no setting.
        "Unknown setting 'ASYNCWS_FOO' in app.config is ignored: the settings are " + ", ".join(DEFAULTS) + ".",
        "Unknown setting 'ASYNCWS_ORIGINS' in app.config is ignored: did you mean 'ASYNCWS_ALLOWED_ORIGINS'?",
        "Unknown setting 'ASYNCWS_PING_INTERVALL' in app.config is ignored: did you mean 'ASYNCWS_PING_INTERVAL'?",
        "Unknown setting 'asyncws_http_thread' in app.config is ignored: did you mean 'ASYNCWS_HTTP_THREADS'?",
    ]


def test_init_app_twice_is_an_error() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    with pytest.raises(RuntimeError, match="already set up"):
        AsyncWS().init_app(app)


def test_asgi_app_is_detected_as_asgi3() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    assert asyncio.iscoroutinefunction(app.asgi_app.__call__)


def test_websocket_route_with_methods_is_an_error() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    with pytest.raises(TypeError, match="always use GET"):
        app.add_websocket("/ws", view_func=lambda: None, methods=["POST"])


def test_await_outside_a_handler_explains() -> None:
    async def nothing() -> None:
        pass

    coro = nothing()
    with pytest.raises(RuntimeError, match="outside a flask_asyncws sync handler"):
        await_(coro)
    with pytest.raises(RuntimeError, match="needs the event loop"):
        run_sync(print)


def test_proxy_outside_a_websocket_explains() -> None:
    with pytest.raises(RuntimeError, match="outside of a websocket context"):
        websocket.path  # noqa: B018


# -- the protocol with scopes from servers lacking features --------------------


async def drive(app: Flask, scope: dict[str, t.Any], incoming: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Run one websocket connection through ``app.asgi_app``; return what it sent."""
    queue: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
    for message in incoming:
        queue.put_nowait(message)
    sent: list[dict[str, t.Any]] = []

    async def receive() -> dict[str, t.Any]:
        return await queue.get()

    async def send(message: dict[str, t.Any]) -> None:
        sent.append(message)
        if message["type"] in ("websocket.close", "websocket.http.response.body"):
            queue.put_nowait({"type": "websocket.disconnect", "code": 1000})

    await asyncio.wait_for(app.asgi_app(scope, receive, send), 5)
    return sent


def ws_scope(path: str, **extra: t.Any) -> dict[str, t.Any]:
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")],
        "scheme": "ws",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
    }
    scope.update(extra)
    return scope


@pytest.mark.parametrize(
    ("headers", "error", "message"),
    [
        ("X-A: 1", TypeError, "as a mapping or (name, value) pairs, not 'X-A: 1'"),
        (b"X-A: 1", TypeError, "as a mapping or (name, value) pairs, not b'X-A: 1'"),
        (5, TypeError, "as a mapping or (name, value) pairs, not 5"),
        (["ab"], TypeError, "as (name, value) pairs, not 'ab'"),
        ([("X-A",)], TypeError, "as (name, value) pairs, not ('X-A',)"),
        ([("X-A", "1", "2")], TypeError, "as (name, value) pairs, not ('X-A', '1', '2')"),
        ([("X-A", 1)], TypeError, "str or bytes, not int: ('X-A', 1)"),
        ({"X-A": None}, TypeError, "str or bytes, not NoneType: ('X-A', None)"),
        ([(None, b"1")], TypeError, "str or bytes, not NoneType: (None, b'1')"),
        ([("X A", "1")], ValueError, "Invalid header name for accept(): ('X A', '1')"),
        ([("X-A", "1\r\nX-B: 2")], ValueError, "Invalid header value for accept(): ('X-A', '1\\r\\nX-B: 2')"),
        ([("X-A", "\u20ac")], ValueError, "Header ('X-A', '\u20ac') for accept() is not latin-1"),
        ([("Sec-WebSocket-Protocol", "chat")], ValueError, "accept(subprotocol=...)"),
    ],
)
def test_bad_accept_headers_are_named(headers: t.Any, error: type[Exception], message: str) -> None:
    """Nothing but str or bytes names and values is sent: anything else is an error naming it."""
    app = Flask(__name__)
    AsyncWS(app)
    raised: list[Exception] = []

    @app.websocket("/ws")
    def handler() -> None:
        try:
            websocket.accept(headers)
        except Exception as exc:
            raised.append(exc)
        websocket.accept()

    with app.test_client().websocket("/ws") as ws:
        assert not ws.accept_headers
    assert len(raised) == 1 and type(raised[0]) is error, raised
    assert message in str(raised[0])


def test_daphne_like_server_denial_falls_back_to_close_and_drops_accept_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    AsyncWS(app)

    @app.websocket("/deny")
    def deny() -> t.Any:
        return "no", 401

    @app.websocket("/accept")
    def accept() -> None:
        websocket.accept({"X-Dropped": "1"})

    # Daphne: no "asgi" key (spec 2.0), no extensions.
    sent = asyncio.run(drive(app, ws_scope("/deny"), [{"type": "websocket.connect"}]))
    assert sent == [{"type": "websocket.close", "code": 1000}]
    with caplog.at_level(logging.WARNING, logger="flask_asyncws"):
        sent = asyncio.run(drive(app, ws_scope("/accept"), [{"type": "websocket.connect"}]))
    assert [r.getMessage() for r in caplog.records if "Accept headers" in r.getMessage()] == [
        "Accept headers 'x-dropped' for '/accept' were not sent: the ASGI server does not support them"
        " (ASGI spec < 2.1)."
    ]
    assert sent[0] == {"type": "websocket.accept", "subprotocol": None, "headers": []}
    assert sent[1]["type"] == "websocket.close"


def test_denial_is_one_body_message_and_root_path_is_honoured() -> None:
    app = Flask(__name__)
    AsyncWS(app)

    @app.websocket("/deny")
    def deny() -> t.Any:
        return "refused", 403, {"X-Reason": "r"}

    scope = ws_scope(
        "/prefix/deny",
        root_path="/prefix",
        asgi={"version": "3.0", "spec_version": "2.3"},
        extensions={"websocket.http.response": {}},
    )
    sent = asyncio.run(drive(app, scope, [{"type": "websocket.connect"}]))
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 403
    assert (b"x-reason", b"r") in sent[0]["headers"]
    assert sent[1] == {"type": "websocket.http.response.body", "body": b"refused", "more_body": False}


def test_exceptions_propagate_when_testing() -> None:
    app = Flask(__name__)
    app.config["TESTING"] = True
    AsyncWS(app)

    @app.websocket("/boom")
    def boom() -> None:
        raise KeyError("boom")

    scope = ws_scope("/boom", extensions={"websocket.http.response": {}})
    with pytest.raises(KeyError, match="boom"):
        asyncio.run(drive(app, scope, [{"type": "websocket.connect"}]))


def test_client_gone_before_connect_runs_nothing() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    ran: list[bool] = []

    @app.before_websocket
    def before() -> None:
        ran.append(True)

    sent = asyncio.run(drive(app, ws_scope("/x"), [{"type": "websocket.disconnect", "code": 1006}]))
    assert sent == [] and ran == []


def test_lifespan_runs_serving_hooks_and_reports_failure() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    events: list[str] = []

    @app.before_serving
    async def start() -> None:
        events.append("before")

    @app.after_serving
    def stop() -> None:
        events.append("after")

    async def run(messages: list[str]) -> list[dict[str, t.Any]]:
        incoming = iter({"type": m} for m in messages)
        sent: list[dict[str, t.Any]] = []

        async def receive() -> dict[str, t.Any]:
            return next(incoming)

        async def send(message: dict[str, t.Any]) -> None:
            sent.append(message)

        await app.asgi_app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        return sent

    sent = asyncio.run(run(["lifespan.startup", "lifespan.shutdown"]))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["before", "after"]

    @app.before_serving
    def broken() -> None:
        raise RuntimeError("database unreachable")

    sent = asyncio.run(run(["lifespan.startup"]))
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: database unreachable"}]


def test_url_for_builds_wss_under_tls() -> None:
    from flask import url_for

    app = Flask(__name__)
    AsyncWS(app)

    @app.route("/page")
    def page() -> str:
        return ""

    @app.websocket("/ws")
    def handler() -> None:
        websocket.send(f"{url_for('handler')} {url_for('page', _external=True)} {websocket.url} {websocket.is_secure}")
        websocket.send(f"{websocket.url_root} {websocket.host_url} {websocket.http_version}")

    scope = ws_scope("/ws", scheme="wss", server=("127.0.0.1", 443), root_path="/app", http_version="2")
    scope["path"] = "/app/ws"
    sent = asyncio.run(drive(app, scope, [{"type": "websocket.connect"}]))
    assert sent[1]["text"] == "wss://testserver/app/ws https://testserver/app/page wss://testserver/app/ws True"
    assert sent[2]["text"] == "wss://testserver/app/ wss://testserver/ 2"


def test_finished_greenlets_are_reused_and_keep_nothing_of_their_job() -> None:
    """A new greenlet costs a fresh frame stack from the OS: finished ones are
    kept (up to IDLE_GREENLETS per thread) and keep no argument, context or error."""
    import contextvars
    import gc
    import weakref

    from greenlet import getcurrent

    from flask_asyncws._bridge import IDLE_GREENLETS, greenlet_spawn, idle_greenlets

    class Payload:
        pass

    var: contextvars.ContextVar[Payload] = contextvars.ContextVar("var")
    ran_in: list[weakref.ref[t.Any]] = []

    def job(payload: Payload | None, fail: bool = False) -> Payload | None:
        ran_in.append(weakref.ref(getcurrent()))
        assert var.get() is not None  # the spawning task's context
        await_(asyncio.sleep(0))
        if fail:
            raise ValueError("from the job")
        return payload

    async def main() -> None:
        payload = Payload()
        refs = [weakref.ref(payload)]
        var.set(payload)
        assert await greenlet_spawn(job, payload) is payload
        with pytest.raises(ValueError, match="from the job"):
            await greenlet_spawn(job, Payload(), True)
        var.set(Payload())
        del payload
        assert refs[0]() is None
        assert ran_in[0]() is ran_in[1]()  # one greenlet served both
        ran_in.clear()
        results = await asyncio.gather(*(greenlet_spawn(job, None) for _ in range(IDLE_GREENLETS + 20)))
        assert results == [None] * (IDLE_GREENLETS + 20)
        # Exactly the idle ones outlive their jobs, freed by reference counting alone.
        alive = {id(g) for g in (ref() for ref in ran_in) if g is not None}
        assert len(idle_greenlets()) == IDLE_GREENLETS
        assert alive == {id(g) for g in idle_greenlets()}

    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()


def test_finish_in_steps_here_and_hands_over_only_what_suspends() -> None:
    """The send path: a coroutine that finishes at once never leaves the
    greenlet; one that suspends is finished by the driver; errors surface."""
    import types

    from greenlet import getcurrent

    from flask_asyncws._bridge import SpawnHooks, finish_in, greenlet_spawn

    steps: list[str] = []
    handed_over: list[int] = []

    async def at_once() -> None:
        steps.append("at once")

    async def suspends() -> None:
        steps.append("before")
        await asyncio.sleep(0)
        steps.append("after")

    async def fails() -> None:
        await asyncio.sleep(0)
        raise OSError("gone")

    @types.coroutine
    def generator_based() -> t.Generator[None, None, None]:
        yield
        steps.append("generator")

    def job() -> str:
        me = getcurrent()
        assert finish_in(me, at_once()) is None
        handed_over.append(len(steps))
        assert finish_in(me, suspends()) is None
        with pytest.raises(OSError, match="gone"):
            finish_in(me, fails())
        assert finish_in(me, generator_based()) is None  # not a coroutine: the driver awaits it
        return "done"

    async def main() -> None:
        waits: list[None] = []
        assert await greenlet_spawn(job, hooks=SpawnHooks(on_wait=lambda: waits.append(None))) == "done"
        assert len(waits) == 3  # suspends(), fails() and the generator; not at_once()

    asyncio.run(main())
    assert steps == ["at once", "before", "after", "generator"]
    assert handed_over == [1]


def test_websocket_context_pushed_again_pops_in_order() -> None:
    """A copied context may be entered while already entered (a wrapped
    function calling itself, say): each pop restores the previous binding."""
    from flask_asyncws import has_websocket_context
    from flask_asyncws._context import WebsocketContext, _cv_websocket

    ctx = WebsocketContext(t.cast(t.Any, "ws"), t.cast(t.Any, None))
    other = WebsocketContext(t.cast(t.Any, "other"), t.cast(t.Any, None))
    ctx.push()
    other.push()
    ctx.push()
    assert _cv_websocket.get() is ctx
    ctx.pop()
    assert _cv_websocket.get() is other
    other.pop()
    assert _cv_websocket.get() is ctx
    ctx.pop()
    assert not has_websocket_context()
    with pytest.raises(RuntimeError, match="not pushed"):
        ctx.pop()


def test_the_readme_test_command_runs_the_node_ids_put_after_it() -> None:
    """The README's test command with node IDs appended runs those tests, not
    the whole suite: no shell comment on its line swallows them, and make
    passes the words that are not its targets to pytest (rather than taking
    them for targets of its own), wherever `test` stands among the goals."""
    import os
    import re
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    quickstart = (root / "README.md").read_text().split("## Quickstart", 1)[1]
    block = re.search(r"```console\n(.*?)```", quickstart, re.S)
    assert block is not None, "the Quickstart has a console block"
    command = next(line for line in block.group(1).splitlines() if "test" in line)
    assert shutil.which("make"), "make is needed: the README's test command is `make test`"
    nodes = [
        "tests/e2e/test_websocket.py::test_misuse_errors_say_what_to_do",
        "tests/e2e/test_websocket.py::test_x[uvicorn]",
    ]
    assert _pytest_arguments(root, command, nodes) == nodes
    assert _pytest_arguments(root, "make install test", nodes) == nodes
    assert _pytest_arguments(root, "make test", []) == []
    # Without `test`, a mistyped goal is still make's error, not a silent success.
    mistyped = subprocess.run(["make", "tset"], cwd=root, env={**os.environ, "MAKEFLAGS": "n"}, capture_output=True)
    assert mistyped.returncode != 0
    assert b"No rule to make target" in mistyped.stderr


def _pytest_arguments(root: Path, command: str, nodes: list[str]) -> list[str]:
    """The arguments ``command`` followed by ``nodes`` would pass to pytest (make in dry-run mode)."""
    import os
    import shlex
    import subprocess

    # make puts variables set on its command line into its recipes' environment:
    # under `make test ARGS=-q` this test must not see that ARGS.
    env = {name: value for name, value in os.environ.items() if name != "ARGS"}
    done = subprocess.run(
        ["bash", "-c", " ".join([command, *map(shlex.quote, nodes)])],
        cwd=root,
        env={**env, "MAKEFLAGS": "n", "PYTHON": "python3"},  # print the commands, run none
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    pytest_line = next(line for line in done.stdout.splitlines() if " -m pytest" in line)
    return pytest_line.split()[3:]


def test_the_installed_flask_is_recognised() -> None:
    """Flask 3.2 takes the context first in its dispatch methods and makes the
    request context an app context; Flask 3.1 does neither."""
    from support.versions import FLASK

    from flask_asyncws import _flask_version as flask_version

    assert flask_version.CONTEXT_FIRST is (FLASK >= (3, 2))
    assert flask_version.MERGED_CONTEXT is (FLASK >= (3, 2))
    app = Flask(__name__)
    with app.test_request_context("/") as ctx:
        assert (type(ctx) is type(app.app_context())) is flask_version.MERGED_CONTEXT
