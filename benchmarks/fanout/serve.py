"""Serve one system's app on an inherited listening socket (``python -m benchmarks.fanout.serve SERVER SYSTEM FD``).

The harness opens the socket and passes its file descriptor, so there is no
race for the port; it runs two of these, one per worker.
"""

from __future__ import annotations

import argparse
import typing as t

from ..client import raise_fd_limit
from ..serve import serve_asgi

SYSTEMS = ("asyncws", "channels", "socketio")


def load(system: str) -> t.Any:
    if system == "asyncws":
        from .asyncws_app import app

        return app.asgi_app  # type: ignore[attr-defined]
    if system == "channels":
        from .channels_app import application

        return application
    if system == "socketio":
        from .socketio_app import application

        return application
    raise SystemExit(f"unknown system {system!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=("hypercorn", "uvicorn"))
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("fd", type=int)
    args = parser.parse_args(argv)
    raise_fd_limit()
    application = load(args.system)
    # lifespan "auto": Django Channels' router answers no lifespan.
    serve_asgi(args.server, application, args.fd, lifespan="auto")


if __name__ == "__main__":
    main()
