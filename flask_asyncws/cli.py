"""Serving the app under Hypercorn from the ``flask`` command or a script.

``flask run`` starts Werkzeug's development server, which speaks WSGI and so
cannot serve websocket routes. ``flask asyncws run`` takes the same options and
serves ``app.asgi_app`` with Hypercorn instead; :func:`run` does the same from
``if __name__ == "__main__":``.

The listening socket is bound before the server starts, so a port in use is
reported at once. With the reloader, a watcher process holds that socket and
restarts a server process on it whenever a source file changes, so a restart
never loses the port to another program.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import typing as t

import click
from flask import Flask
from flask.cli import AppGroup, ScriptInfo, pass_script_info
from flask.helpers import get_debug_flag

from ._config import SOCKET_ENV, Settings

#: How often the reloader looks for changed files, in seconds.
RELOAD_INTERVAL = 1.0


class PortInUseError(OSError):
    """The address to listen on is taken by another program."""


def run(
    app: Flask,
    host: str = "127.0.0.1",
    port: int = 5000,
    debug: bool | None = None,
    *,
    reload: bool | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    extra_files: t.Sequence[str] = (),
) -> None:
    """Serve ``app`` (HTTP and websocket routes) with Hypercorn until interrupted.

    ``debug`` sets ``app.debug``; ``reload`` (default: on in debug mode)
    restarts the server when a source file changes. ``certfile`` and
    ``keyfile`` serve HTTPS and ``wss://``. ``ASYNCWS_PING_INTERVAL`` and
    ``ASYNCWS_SERVER_MAX_MESSAGE_SIZE`` configure Hypercorn's websockets.

    Raises :class:`PortInUseError` when the port is taken.
    """
    if "asyncws" not in app.extensions:
        raise RuntimeError("AsyncWS is not set up on this app: call AsyncWS(app) before serving it.")
    if (certfile is None) != (keyfile is None):
        raise ValueError("Serving TLS needs both a certificate file and a key file.")
    if debug is not None:
        app.debug = debug
    if reload is None:
        reload = app.debug

    inherited = os.environ.get(SOCKET_ENV)
    if inherited is not None:
        sock = socket.socket(fileno=int(inherited))
    else:
        sock = bind(host, port)
        _announce(app, sock, tls=certfile is not None, reload=reload)
        if reload:
            with sock:
                _watch_and_restart(sock, extra_files)
            return
    with sock:
        serve(app, sock, certfile=certfile, keyfile=keyfile)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a clear error if it is taken."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise OSError(f"Cannot listen on {host!r}: {exc.strerror}.") from None
    try:
        return socket.create_server(address, family=family, backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                exc.errno,
                f"Port {port} on {host} is in use by another program. Stop that program,"
                " or choose another port with --port.",
            ) from None
        raise


def serve(app: Flask, sock: socket.socket, *, certfile: str | None = None, keyfile: str | None = None) -> None:
    """Run Hypercorn for ``app.asgi_app`` on the bound ``sock`` until SIGINT/SIGTERM.

    On the signal, open websockets are closed with 1001 and their teardowns
    run before Hypercorn shuts down (see :func:`_serve_until_signalled`).
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    settings = Settings.from_config(app.config)
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # Hypercorn closes the socket it is given
    config.certfile = certfile
    config.keyfile = keyfile
    config.accesslog = "-"
    config.errorlog = "-"
    config.loglevel = "WARNING"  # the URL is announced once, not per restart
    config.websocket_ping_interval = settings.ping_interval
    if settings.server_max_message_size is not None:
        config.websocket_max_message_size = settings.server_max_message_size
    # A fresh context: connections must not share a context pushed by the caller.
    asgi_app = app.asgi_app  # type: ignore[attr-defined]
    contextvars.Context().run(asyncio.run, _serve_until_signalled(hypercorn_serve, asgi_app, config))


#: The signals that shut the server down; a second one stops it at once.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def _serve_until_signalled(
    hypercorn_serve: t.Callable[..., t.Awaitable[None]], asgi_app: t.Any, config: t.Any
) -> None:
    """Serve until SIGINT or SIGTERM, closing the open websockets before Hypercorn shuts down.

    Hypercorn waits for every open connection to end before it cancels them
    at its graceful timeout, and on Python 3.12.1 and later that wait has no
    end while a websocket is open (asyncio's ``Server.wait_closed()`` waits for
    connections). So on the signal the app first closes its websockets (1001)
    and lets their teardowns run (within Hypercorn's graceful timeout; the
    same signal again meanwhile, as a terminal's CTRL+C reaches the reloader
    and its server alike, changes nothing), then Hypercorn is told to stop.
    A signal after that has its default effect: it ends the process at once.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    shutting_down: list[asyncio.Task[None]] = []

    async def shut_down() -> None:
        try:
            await asgi_app.shutdown(config.graceful_timeout)
        finally:
            _restore_signals(loop)
            stop.set()

    def on_signal() -> None:
        if not shutting_down:
            shutting_down.append(loop.create_task(shut_down()))

    for signum in SHUTDOWN_SIGNALS:
        try:
            loop.add_signal_handler(signum, on_signal)
        except NotImplementedError:  # Windows: no signal handlers on the loop
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(on_signal))
    try:
        await hypercorn_serve(asgi_app, config, shutdown_trigger=stop.wait)
    finally:
        _restore_signals(loop)


def _restore_signals(loop: asyncio.AbstractEventLoop) -> None:
    for signum in SHUTDOWN_SIGNALS:
        try:
            loop.remove_signal_handler(signum)
        except NotImplementedError:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def _announce(app: Flask, sock: socket.socket, *, tls: bool, reload: bool) -> None:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if tls else "http"
    click.echo(f" * Serving Flask app '{app.name}' with websockets (Hypercorn)")
    click.echo(f" * Debug mode: {'on' if app.debug else 'off'}")
    click.echo(f" * Running on {scheme}://{host}:{port} (websockets: {'wss' if tls else 'ws'}://{host}:{port})")
    if reload:
        click.echo(" * Restarting on changes to source files")
    click.echo("Press CTRL+C to quit")


def _watch_and_restart(sock: socket.socket, extra_files: t.Sequence[str]) -> None:
    """Run this same command in a child process serving ``sock``; restart it on changes."""
    env = {**os.environ, SOCKET_ENV: str(sock.fileno())}
    argv = [sys.executable, *sys.orig_argv[1:]]
    child: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            files = _mtimes(extra_files)
            child = subprocess.Popen(argv, env=env, pass_fds=(sock.fileno(),))
            while child.poll() is None and not _changed(files):
                time.sleep(RELOAD_INTERVAL)
            if child.poll() is None:
                click.echo(" * Detected a change, restarting")
                _stop(child, signal.SIGTERM)
                continue
            if child.returncode == 0:
                return
            click.echo(f" * The server exited with status {child.returncode}; waiting for a change to restart")
            while not _changed(files):
                time.sleep(RELOAD_INTERVAL)
    except KeyboardInterrupt:
        if child is not None:
            # CTRL+C reaches the child too; the same signal again is harmless
            # while it shuts down, and needed when only this process was signalled.
            _stop(child, signal.SIGINT)


def _interrupt(signum: int, frame: t.Any) -> t.NoReturn:
    raise KeyboardInterrupt


def _stop(child: subprocess.Popen[bytes], how: signal.Signals) -> None:
    """Ask ``child`` to shut down gracefully; kill it if it takes too long."""
    if child.poll() is None:
        child.send_signal(how)
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _mtimes(extra_files: t.Sequence[str]) -> dict[str, float]:
    paths = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    paths.update(extra_files)
    mtimes = {}
    for path in paths:
        if path:
            try:
                mtimes[path] = os.stat(path).st_mtime
            except OSError:
                pass
    return mtimes


def _changed(files: dict[str, float]) -> bool:
    for path, mtime in files.items():
        try:
            if os.stat(path).st_mtime != mtime:
                return True
        except OSError:
            return True
    return False


asyncws_cli = AppGroup("asyncws", help="Serve the app with websockets (flask-asyncws).")


@asyncws_cli.command("run", with_appcontext=False)
@click.option("--host", "-h", default="127.0.0.1", show_default=True, help="The interface to bind to.")
@click.option("--port", "-p", default=5000, show_default=True, type=int, help="The port to bind to.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="A TLS certificate file: serve https/wss.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="The TLS certificate's key file.")
@click.option(
    "--reload/--no-reload", default=None, help="Restart when a source file changes. On by default in debug mode."
)
@click.option("--debug/--no-debug", default=None, help="Debug mode. Also set by 'flask --debug'.")
@click.option(
    "--extra-files",
    default=None,
    type=click.Path(),
    help=f"More files the reloader watches, separated by '{os.path.pathsep}'.",
)
@pass_script_info
def run_command(
    info: ScriptInfo,
    host: str,
    port: int,
    cert: str | None,
    key: str | None,
    reload: bool | None,
    debug: bool | None,
    extra_files: str | None,
) -> None:
    """Serve the app's HTTP and websocket routes with Hypercorn.

    The websocket-capable counterpart of 'flask run', for development.
    In production run a server directly: hypercorn myproject:app.asgi_app
    """
    if debug is None:
        debug = get_debug_flag()
    if (cert is None) != (key is None):
        raise click.BadParameter("--cert and --key are used together.", param_hint="'--cert' / '--key'")
    app = info.load_app()
    files = [path for path in (extra_files or "").split(os.path.pathsep) if path]
    try:
        run(app, host, port, debug, reload=reload, certfile=cert, keyfile=key, extra_files=files)
    except PortInUseError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
