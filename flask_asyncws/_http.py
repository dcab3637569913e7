"""The HTTP bridge: the app's existing routes served through ASGI.

A request's path: :class:`HTTPBridge` builds the WSGI environ
(:mod:`~flask_asyncws._environ`), receives the request body on the loop
(:mod:`~flask_asyncws._http_body`), runs Flask's ``wsgi_app`` through an
:class:`~flask_asyncws._http_exchange.Exchange` in a worker thread
(:mod:`~flask_asyncws._worker_pool`, bound to the loop by a
:class:`~flask_asyncws._portal.Portal`) or, for an ``async def`` view, in a
greenlet on the loop, and sends the response. A request costs one hop from
the loop to a worker thread and back when the response is a single block;
memory stays bounded in both directions.
"""

from __future__ import annotations

import asyncio
import inspect
import typing as t

from ._bridge import SpawnHooks, greenlet_spawn
from ._environ import build_environ
from ._http_body import DRAIN_LIMIT
from ._http_exchange import Exchange, file_wrapper
from ._log import logger
from ._portal import Portal
from ._worker_pool import WorkerPool

if t.TYPE_CHECKING:
    import flask

    from ._config import Settings
    from ._types import ASGIReceive, ASGISend, Message, Scope


class HTTPBridge:
    """Runs the Flask app for http scopes.

    Requests for sync views run in a pool of ``ASYNCWS_HTTP_THREADS`` worker
    threads that serves HTTP only, so open websockets never take a thread from
    it. Each worker is bound to the server's loop: async hooks run there, not
    on a new loop per call. A request whose view is an ``async def`` runs its
    whole Flask pipeline in a greenlet on the loop instead, so it holds no
    thread while it awaits.
    """

    def __init__(self, app: flask.Flask, settings: t.Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self._pool: WorkerPool | None = None
        #: Set by :func:`flask_asyncws.metrics.init_metrics`: told the worker pool's load (see ``WorkerPool.on_load``).
        self.on_pool_load: t.Callable[[int, int], None] | None = None
        self._async_endpoints: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        loop = asyncio.get_running_loop()
        exchange = Exchange(scope, receive, send, loop, self._settings().body_timeout)
        environ = build_environ(scope)
        environ["wsgi.input_terminated"] = True
        environ["wsgi.file_wrapper"] = file_wrapper
        body = exchange.body
        try:
            if not await body.read_request(environ, self.app.config.get("MAX_CONTENT_LENGTH"), exchange.read_body):
                return  # the client left before sending the request
            if self._runs_on_loop(environ):
                warn_ms = self._settings().blocking_warn_ms
                result = await greenlet_spawn(
                    exchange.run,
                    self.app.wsgi_app,
                    environ,
                    hooks=_NO_WARNING if warn_ms is None else SpawnHooks(on_slow=_warn_slow, slow_after=warn_ms / 1000),
                )
            else:
                pool = self._pool
                if pool is None:
                    pool = self._pool = WorkerPool(self._settings().http_threads, "asyncws-http", self.on_pool_load)
                exchange.portal = portal = Portal(loop)
                result = await pool.run(loop, self._work, exchange, portal, environ)
        except BaseException:
            body.disconnected = True  # cancelled: a worker stops at its next send
            raise
        finally:
            body.close()
        if result is not None:
            await exchange.finish(*result)
        elif exchange.error is not None and not body.disconnected:
            await body.drain(DRAIN_LIMIT)
        if exchange.error is not None:
            raise exchange.error

    def _runs_on_loop(self, environ: dict[str, t.Any]) -> bool:
        """Whether the request is for an ``async def`` view."""
        endpoints = self._async_endpoints
        if endpoints is None:
            # Flask refuses new routes once it has served a request.
            endpoints = self._async_endpoints = frozenset(
                name for name, view in self.app.view_functions.items() if inspect.iscoroutinefunction(view)
            )
        if not endpoints:
            return False
        try:
            endpoint, _ = self.app.url_map.bind_to_environ(environ).match()
        except Exception:  # no match, a redirect, a bad host: Flask decides, in a worker
            return False
        return endpoint in endpoints

    def _work(
        self, exchange: Exchange, portal: Portal, environ: dict[str, t.Any]
    ) -> tuple[Message | None, bytes] | None:
        with portal:  # await_() in the app (async hooks) waits on the server's loop
            return exchange.run(self.app.wsgi_app, environ)

    async def aclose(self) -> None:
        """Release the worker threads; called at server shutdown."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


_NO_WARNING = SpawnHooks()


def _warn_slow(held: float) -> None:
    logger.warning(
        "A request to an async view held the event loop for %.0f ms without awaiting;"
        " sync code in its hooks blocks every other connection meanwhile.",
        held * 1000,
    )
