"""Serve one benchmark app on an inherited listening socket, in this process.

``python -m benchmarks.serve SERVER APP FD [--threads N]``. The runner opens the
socket and passes its file descriptor, so there is no race for the port.
"""

from __future__ import annotations

import argparse
import socket
import sys
import typing as t

from .client import raise_fd_limit

#: Every server's listen queue: a burst of connections beyond it costs each
#: dropped one a retransmission (a second or more) and can fail its handshake.
LISTEN_BACKLOG = 4096

APPS = ("sync", "async", "session", "quart", "raw", "floor", "greenlet-floor", "async-floor", "flask-sock")


def load(app: str, server: str) -> object:
    from . import apps

    if app in ("sync", "async", "session"):
        return apps.make_flask_asyncws().asgi_app  # type: ignore[attr-defined]
    if app == "quart":
        return apps.make_quart()
    if app == "raw":
        return apps.raw_echo
    if app == "floor":
        return apps.make_context_floor()
    if app == "greenlet-floor":
        return apps.make_greenlet_floor()
    if app == "async-floor":
        return apps.make_async_floor()
    if app == "flask-sock":
        return apps.make_flask_sock()
    raise SystemExit(f"unknown app {app!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=("hypercorn", "uvicorn", "gunicorn"))
    parser.add_argument("app", choices=APPS)
    parser.add_argument("fd", type=int)
    parser.add_argument("--threads", type=int, default=100)
    args = parser.parse_args(argv)
    raise_fd_limit()
    application = load(args.app, args.server)
    if args.server == "gunicorn":
        serve_gunicorn(application, args.fd, args.threads)
        return
    serve_asgi(args.server, application, args.fd)


def serve_asgi(server: str, application: t.Any, fd: int, lifespan: str = "on") -> None:
    """Serve ``application`` with hypercorn or uvicorn on uvloop, on the listening socket ``fd``."""
    import uvloop

    if server == "hypercorn":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"fd://{fd}"]
        config.accesslog = None
        config.errorlog = "-"
        config.loglevel = "WARNING"
        config.graceful_timeout = 1.0
        config.backlog = LISTEN_BACKLOG  # hypercorn listens again on the socket, by default with 100
        uvloop.run(serve(application, config))
    else:
        import uvicorn

        sock = socket.socket(fileno=fd)
        uconfig = uvicorn.Config(
            application, loop="uvloop", log_level="warning", lifespan=lifespan, access_log=False, backlog=LISTEN_BACKLOG
        )
        uvloop.run(uvicorn.Server(uconfig).serve(sockets=[sock]))


def serve_gunicorn(application: object, fd: int, threads: int) -> None:
    """One gthread worker with a thread per connection, as Flask-Sock needs."""
    from gunicorn.app.base import BaseApplication

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"fd://{fd}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                "worker_connections": threads + 10,
                "backlog": LISTEN_BACKLOG,
                "timeout": 120,
                "loglevel": "warning",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return application

    App().run()


if __name__ == "__main__":
    sys.exit(main())
