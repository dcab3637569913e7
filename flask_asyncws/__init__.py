"""Quart-style websockets for an existing Flask app, served as one ASGI app."""

from __future__ import annotations

from ._bridge import await_, run_sync
from ._broker import BrokerUnavailable
from ._context import after_this_websocket, copy_current_websocket_context, has_websocket_context, websocket
from ._extension import AsyncWS
from ._routing import Blueprint
from ._websocket import Websocket, WebsocketDisconnect
from .signals import broker_behind, got_websocket_exception, websocket_finished, websocket_refused, websocket_started

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncWS",
    "Blueprint",
    "BrokerUnavailable",
    "Websocket",
    "WebsocketDisconnect",
    "after_this_websocket",
    "await_",
    "broker_behind",
    "copy_current_websocket_context",
    "got_websocket_exception",
    "has_websocket_context",
    "run_sync",
    "websocket",
    "websocket_finished",
    "websocket_refused",
    "websocket_started",
]
