"""Testing websocket routes without a server."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import flask


def install(app: flask.Flask) -> None:
    """Give ``app.test_client()`` a ``websocket()`` method."""
