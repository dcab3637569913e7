"""``flask asyncws run`` and ``flask_asyncws.cli.run``, run as real processes."""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import ssl
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from flask import Flask
from support.servers import ServerProcess
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from flask_asyncws import AsyncWS
from flask_asyncws.cli import asyncws_cli

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
RUNNING = re.compile(r"Running on (https?)://127\.0\.0\.1:(\d+)")


def spawn(*args: str, cwd: Path = ROOT, pythonpath: Path | None = None) -> ServerProcess:
    """``python *args`` (a server that prints where it runs), stopped with SIGINT."""
    return ServerProcess(
        [sys.executable, *args],
        cwd=cwd,
        env={"PYTHONUNBUFFERED": "1", "FLASK_DEBUG": None, "FLASK_APP": None},
        pythonpath=None if pythonpath is None else [pythonpath],
        exit_signal=signal.SIGINT,
        exit_timeout=TIMEOUT,
    )


def running_on(server: ServerProcess) -> tuple[str, int]:
    """The scheme and port the server says it runs on."""
    match = server.wait_for(RUNNING, TIMEOUT)
    return match.group(1), int(match.group(2))


def echo_once(url: str, **options: t.Any) -> t.Any:
    with connect(url, proxy=None, open_timeout=TIMEOUT, **options) as conn:
        conn.send("ping")
        return conn.recv(TIMEOUT)


def test_command_is_registered() -> None:
    app = Flask(__name__)
    AsyncWS(app)
    assert app.cli.commands.get("asyncws") is asyncws_cli
    result = app.test_cli_runner().invoke(args=["asyncws", "run", "--help"])
    assert result.exit_code == 0 and "--reload" in result.output and "--cert" in result.output


def test_flask_asyncws_run_serves_http_and_websockets() -> None:
    with spawn("-m", "flask", "--app", "examples.echo.app", "asyncws", "run", "--port", "0") as server:
        _, port = running_on(server)
        assert echo_once(f"ws://127.0.0.1:{port}/echo") == "ping"
        assert echo_once(f"ws://127.0.0.1:{port}/aecho") == "ping"
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=TIMEOUT).status_code == 200
        assert server.stop(signal.SIGINT) == 0


def test_port_in_use_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with spawn("-m", "flask", "--app", "examples.echo.app", "asyncws", "run", "--port", str(port)) as server:
            assert server.proc.wait(TIMEOUT) == 1
            server.wait_for(f"Error: Port {port} on 127.0.0.1 is in use by another program", TIMEOUT)


def test_run_from_a_script(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(
        textwrap.dedent(
            """
            from flask_asyncws.cli import run
            from examples.echo.app import app

            if __name__ == "__main__":
                run(app, port=0)
            """
        )
    )
    with spawn(str(tmp_path / "script.py"), cwd=tmp_path, pythonpath=ROOT) as server:
        _, port = running_on(server)
        server.wait_for("Press CTRL")
        assert echo_once(f"ws://127.0.0.1:{port}/echo") == "ping"
        assert server.stop(signal.SIGINT) == 0


APP_SOURCE = """
from flask import Flask
from flask_asyncws import AsyncWS, websocket

app = Flask(__name__)
AsyncWS(app)


@app.websocket("/echo")
def echo():
    websocket.send("{prefix}" + websocket.receive())
"""


def test_reload_restarts_on_change_and_keeps_the_port(tmp_path: Path) -> None:
    source = tmp_path / "reloading_app.py"
    source.write_text(APP_SOURCE.format(prefix="v1 "))
    with spawn(
        "-m", "flask", "--app", "reloading_app", "--debug", "asyncws", "run", "--port", "0", cwd=tmp_path
    ) as server:
        server.wait_for("Debug mode: on", TIMEOUT)
        _, port = running_on(server)
        server.wait_for("Restarting on changes", TIMEOUT)
        url = f"ws://127.0.0.1:{port}/echo"
        assert echo_once(url) == "v1 ping"

        source.write_text(APP_SOURCE.format(prefix="v2 "))
        os.utime(source, (time.time() + 5, time.time() + 5))  # a newer mtime even on coarse clocks
        server.wait_for("Detected a change, restarting", TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        reply = None
        while reply != "v2 ping" and time.monotonic() < deadline:
            try:
                reply = echo_once(url)
            except (OSError, WebSocketException):
                time.sleep(0.05)  # the old process is stopping; the new one is loading the app
        assert reply == "v2 ping"
        assert server.stop(signal.SIGINT) == 0


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    args = ["-m", "flask", "--app", "examples.echo.app", "asyncws", "run", "--port", "0", "--cert", cert, "--key", key]
    with spawn(*args) as server:
        scheme, port = running_on(server)
        assert scheme == "https"
        context = ssl.create_default_context(cafile=cert)
        assert echo_once(f"wss://127.0.0.1:{port}/echo", ssl=context, server_hostname="localhost") == "ping"


def test_server_settings_reach_hypercorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import hypercorn.asyncio

    from flask_asyncws import cli

    seen: list[t.Any] = []

    async def fake_serve(app: t.Any, config: t.Any, *, shutdown_trigger: t.Any) -> None:
        seen.append(config)
        os.close(int(config.bind[0].removeprefix("fd://")))

    monkeypatch.setattr(hypercorn.asyncio, "serve", fake_serve)
    app = Flask(__name__)
    app.config.update(ASYNCWS_PING_INTERVAL=15, ASYNCWS_SERVER_MAX_MESSAGE_SIZE=1024)
    AsyncWS(app)
    with cli.bind("127.0.0.1", 0) as sock:
        cli.serve(app, sock)
    (config,) = seen
    assert config.websocket_ping_interval == 15
    assert config.websocket_max_message_size == 1024
    assert config.bind[0].startswith("fd://")


def test_run_needs_asyncws() -> None:
    from flask_asyncws.cli import run

    with pytest.raises(RuntimeError, match="AsyncWS"):
        run(Flask(__name__), port=0)


def self_signed_certificate(directory: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


WERKZEUG_APP = """
import asyncio

from flask import Flask, request

from flask_asyncws import AsyncWS, websocket

app = Flask(__name__)
AsyncWS(app)


@app.post("/json")
async def json_view():
    await asyncio.sleep(0)
    return {"json": request.get_json()}


@app.post("/form")
async def form_view():
    return {"name": request.form["name"], "file": request.files["file"].read().decode()}


@app.websocket("/ws")
def ws():
    websocket.send("unreachable")
"""


def werkzeug_server(directory: Path) -> ServerProcess:
    """``flask run`` (Werkzeug's development server) on a free port, without asgiref."""
    (directory / "werkzeug_app.py").write_text(WERKZEUG_APP)
    # Flask's own async_to_sync needs asgiref (its "async" extra), not a dependency.
    blocked = directory / "no_asgiref" / "asgiref"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('asgiref is not installed')\n")
    args = ("-m", "flask", "--app", "werkzeug_app", "run", "--port", "0")
    return spawn(*args, cwd=directory, pythonpath=blocked.parent)


def test_flask_run_serves_async_views(tmp_path: Path) -> None:
    with werkzeug_server(tmp_path) as server:
        _, port = running_on(server)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.post("/json", json={"a": [1]}).json() == {"json": {"a": [1]}}
            response = client.post("/form", data={"name": "n"}, files={"file": ("f.txt", b"content")})
            assert response.json() == {"name": "n", "file": "content"}


def test_flask_run_tells_a_websocket_client_how_to_serve_websockets(tmp_path: Path) -> None:
    with werkzeug_server(tmp_path) as server:
        _, port = running_on(server)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=TIMEOUT)
    response = refused.value.response
    assert response.status_code == 400
    message = response.body.decode()
    assert "this server cannot serve websockets" in message
    assert "flask --app werkzeug_app asyncws run" in message
    assert "hypercorn werkzeug_app:app.asgi_app" in message
