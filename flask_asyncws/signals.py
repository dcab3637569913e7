"""Signals for a websocket's life, as Flask sends them for a request.

Each is a blinker signal from a :class:`blinker.Namespace`, as Flask's own;
the sender is the Flask app, and the keyword arguments are listed with each.
Connect a receiver as with Flask's signals::

    from flask_asyncws import websocket_finished

    @websocket_finished.connect_via(app)
    def log_close(sender, websocket, code, **extra):
        app.logger.info("%s closed with %s", websocket.path, code)

Receivers run on the connection's task, so they must not block: a slow one
holds up every connection of the worker. Nothing is sent per message, and a
signal with no receiver costs the connection one attribute check.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent when the app starts on a websocket: its contexts are pushed, before
#: the ``before_websocket`` hooks run. Keyword argument: ``websocket`` (the
#: :class:`~flask_asyncws.Websocket`; the ``websocket`` proxy works too).
websocket_started = _signals.signal("websocket-started")

#: Sent when the app is done with a websocket, however it ended (closed by
#: the handler, the client leaving, an error, a refusal), after the response
#: and close and before the ``teardown_websocket`` functions. Keyword
#: arguments: ``websocket``; ``code``, the close code the connection ended
#: with (the app's close, else the client's), or ``None`` if it was never
#: accepted.
websocket_finished = _signals.signal("websocket-finished")

#: Sent as a handshake is refused with an HTTP response, before it is sent.
#: Keyword arguments: ``response`` (the :class:`flask.Response`) and
#: ``websocket``: the :class:`~flask_asyncws.Websocket` when the app refused
#: (a handler's or hook's response, ``abort()``, an error handler's, 500 for
#: an unhandled error, 503 at shutdown), ``None`` when the handshake was
#: refused before any of the app's code ran (403 cross-origin, 400 invalid
#: key, 503 while shutting down), with no context pushed. A handler that
#: returns without accepting is not a refusal with a response (the server
#: answers 403 of its own): :data:`websocket_finished` tells it, with
#: ``code=None``.
websocket_refused = _signals.signal("websocket-refused")

#: Sent for an exception no error handler took in a websocket handler or its
#: hooks, before it is logged and answered (500 before accept, 1011 after),
#: and just before Flask's ``got_request_exception``, which is sent for it
#: too. Keyword arguments: ``websocket`` and ``exception``.
got_websocket_exception = _signals.signal("got-websocket-exception")

#: Sent when a worker falls behind the groups it delivers for (with
#: ``ASYNCWS_BROKER_URL``), at most once a second: ``lag``, the seconds
#: between a message's publish and its delivery here (``None`` if not
#: known), and ``lost``, True when the connection to the broker was lost,
#: so messages published until it is back do not reach this worker's
#: members. It is also logged. Sent from the worker's broker thread or loop.
broker_behind = _signals.signal("broker-behind")

__all__ = ["broker_behind", "got_websocket_exception", "websocket_finished", "websocket_refused", "websocket_started"]
