"""Groups across workers and hosts, on Redis (``ASYNCWS_BROKER_URL``).

One :class:`RedisBroker` per app and process runs on an event loop of its own, in a thread: sync code
anywhere (a handler, an HTTP view in a worker thread, a script with no loop at all) and async code on the
server's loop hand it work and wait on a :class:`concurrent.futures.Future`.

- A publish is a ``PUBLISH`` on the group's channel (``<prefix>g:<group>``) of the wire form
  :func:`~flask_asyncws._groups.encode` makes: bytes that are never evaluated. Publishes queued meanwhile
  go out in one pipeline, in order.
- Each worker holds one subscribing connection for all the groups it has members in. A join waits for a
  ``PING`` sent after its ``SUBSCRIBE`` to come back on it, so the member receives whatever is published
  after the join returns, and nothing published before.
- Who is in a group, across workers: :mod:`~flask_asyncws._tallies`.

Redis gone: the subscriber reconnects with a bounded backoff, then subscribes again and rewrites its
tallies; meanwhile publishing and counting raise :class:`BrokerUnavailable`, and websockets stay open.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import random
import threading
import time
import typing as t
import uuid

from ._config import redacted
from ._log import logger
from .signals import broker_behind

if t.TYPE_CHECKING:
    from ._config import Settings

T = t.TypeVar("T")

#: Seconds a connect or a command may take before Redis counts as unavailable.
TIMEOUT = 5.0
#: The longest a caller waits for the broker: a command retried once, and a margin.
WAIT = 2 * TIMEOUT + 1
#: The subscriber's reconnection backoff: first and longest wait, in seconds.
BACKOFF = (0.1, 5.0)
#: Seconds between checks that the subscribing connection still answers.
HEALTH_EVERY = 5.0
#: The reconnection backoff's jitter: its own generator, so the app's seeded ``random`` is left alone.
_jitter = random.Random()
#: Messages handed to the server's loop and not yet delivered before the
#: subscriber stops reading (Redis then holds them, up to its own limit).
MAX_IN_FLIGHT = 10_000


class BrokerUnavailable(ConnectionError):
    """The broker (``ASYNCWS_BROKER_URL``) could not be reached or did not answer in time.

    Nothing was counted, and a publish is not retried: after a refused or lost
    connection it was not published; after a timeout Redis may still run it once
    it answers (at most once).
    """


class Deliveries(t.Protocol):
    """What the broker needs of the app's groups in this process (:class:`~flask_asyncws._groups.Hub`)."""

    app: t.Any
    rooms: dict[asyncio.AbstractEventLoop, t.Any]

    def deliver_here(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, bytes]]) -> None: ...
    def backlog(self) -> int: ...
    def local_count(self, group: str) -> int: ...
    def snapshot(self) -> dict[str, tuple[int, dict[str, int]]]: ...
    def falling_behind(self, why: str, lag: float | None) -> None: ...


def tell_behind(app: t.Any, lag: float | None, lost: bool) -> None:
    """Send :data:`~flask_asyncws.signals.broker_behind`, in the app's context.

    A receiver that raises is logged: the delivery or reconnection that sent the
    signal goes on.
    """
    if not broker_behind.receivers:
        return
    try:
        with app.app_context():
            broker_behind.send(app, lag=lag, lost=lost)
    except Exception:
        logger.exception("A broker_behind receiver failed.")


def preload(url: str) -> None:
    """Import redis-py now (``init_app``), not at the first join, on the server's loop,
    and check that it can use ``url``."""
    try:
        import redis.asyncio

        from . import _tallies  # noqa: F401
    except ImportError:
        raise RuntimeError(
            'ASYNCWS_BROKER_URL is set: groups on Redis need redis-py, pip install "flask-asyncws[redis]".'
        ) from None
    try:
        redis.asyncio.ConnectionPool.from_url(url)
    except ValueError as exc:
        raise ValueError(f"ASYNCWS_BROKER_URL {redacted(url)} is not a URL redis-py can use: {exc}") from None


class RedisBroker:
    """The worker's side of groups in Redis, on its own loop and thread."""

    def __init__(self, hub: Deliveries, settings: Settings) -> None:
        assert settings.broker_url is not None
        preload(settings.broker_url)
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from ._tallies import FAILURES, Tallies

        self.failures = FAILURES
        self.hub = hub
        self.url = settings.broker_url
        self.safe_url = redacted(self.url)
        self.prefix = settings.broker_prefix
        self.worker = uuid.uuid4().hex
        # RESP2 in every redis-py version: subscribed messages arrive as replies.
        options: dict[str, t.Any] = {"protocol": 2, "socket_connect_timeout": TIMEOUT}
        # The subscriber waits for messages without a read timeout; the health check finds a dead link.
        self.subscriber_pool: t.Any = aioredis.ConnectionPool.from_url(
            self.url, socket_timeout=None, retry=Retry(NoBackoff(), 0), **options
        )

        def client(resends: int) -> t.Any:
            """One connection for commands, sent again ``resends`` times if Redis had dropped it (never after
            a timeout: the command may have run)."""
            retry = Retry(NoBackoff(), resends, supported_errors=(aioredis.ConnectionError,))
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=1,
                timeout=TIMEOUT,
                socket_timeout=TIMEOUT,
                retry=retry,
                # redis-py 5.0 sends again only errors listed here too (later releases read the Retry's).
                retry_on_error=[aioredis.ConnectionError] if resends else [],
                **options,
            )
            return aioredis.Redis(connection_pool=pool)

        # Counting and tallies can run twice. A publish cannot: a connection lost after a PUBLISH was sent
        # may have lost only the reply, and members would get the message twice.
        self.redis = client(resends=1)
        self.publisher = client(resends=0)
        # Broker-loop state: touched only from the broker's thread.
        self.subscribed: set[str] = set()
        self.connection: t.Any = None
        self.fences: collections.deque[tuple[bytes, asyncio.Future[None]]] = collections.deque()
        self.tokens = itertools.count()
        self.publishes: list[tuple[bytes, bytes, concurrent.futures.Future[None]]] = []
        self.publishing: asyncio.Task[None] | None = None
        self.tallies = Tallies(self.redis, self.key, self.worker, settings.presence_ttl, hub.snapshot)
        self.batch: list[tuple[str, bytes]] = []
        self.lost_since: float | None = None
        #: Reading from the subscription is paused: too much waits for delivery.
        self.paused = False
        self.read_at = 0.0
        self.closing = False
        # Shared with the server's loops.
        self.in_flight = 0
        self.in_flight_lock = threading.Lock()

        self.tasks: list[asyncio.Task[None]] = []
        self.loop = asyncio.new_event_loop()
        #: Set once the first subscribing connection is up, or failed.
        self.tried = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="flask-asyncws broker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _start(self) -> None:
        """Subscribe and heartbeat from the first join on (a process that only publishes or counts needs neither)."""
        if not self.tasks:
            self.tasks = [self.loop.create_task(self._subscription()), self.loop.create_task(self.tallies.heartbeat())]
            for task in self.tasks:
                task.add_done_callback(_report_end)

    # -- what the hub calls, from any thread --

    def publish(self, group: str, wire: bytes) -> concurrent.futures.Future[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self.closing:
            done.set_exception(BrokerUnavailable("The app is shutting down: its broker connection is closed."))
        else:
            self.loop.call_soon_threadsafe(self._queue_publish, self.key("g", group), wire, done)
        return done

    def joined(self, group: str) -> concurrent.futures.Future[None]:
        return self._submit(self._joined(group), unavailable_ok=True)

    def recount(self, group: str) -> concurrent.futures.Future[None]:
        return self._submit(self.tallies.changed(group), unavailable_ok=True)

    def left(self, group: str) -> concurrent.futures.Future[None]:
        return self._submit(self._left(group), unavailable_ok=True)

    def count(self, group: str) -> concurrent.futures.Future[int]:
        return self._submit(self.tallies.count(group))

    def presence(self, group: str) -> concurrent.futures.Future[dict[str, int]]:
        return self._submit(self.tallies.presence(group))

    def close(self) -> None:
        """Leave Redis as if this worker had never been (its tallies removed), and stop."""
        if self.closing or not self.loop.is_running():
            return
        done = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
        try:
            done.result(TIMEOUT)
        except Exception:
            logger.debug("Closing the broker connection failed.", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)

    def _submit(self, coro: t.Coroutine[t.Any, t.Any, T], unavailable_ok: bool = False) -> concurrent.futures.Future[T]:
        if self.closing:  # the loop is stopping: nothing would run the coroutine
            coro.close()
            done: concurrent.futures.Future[T] = concurrent.futures.Future()
            if unavailable_ok:
                done.set_result(None)  # type: ignore[arg-type]
            else:
                done.set_exception(BrokerUnavailable("The app is shutting down: its broker connection is closed."))
            return done

        async def guarded() -> T:
            try:
                return await coro
            except self.failures as exc:
                await self._drop_idle()
                if unavailable_ok:
                    return None  # type: ignore[return-value]
                raise self.unavailable(exc) from None

        return asyncio.run_coroutine_threadsafe(guarded(), self.loop)

    async def _drop_idle(self) -> None:
        """Close the idle pooled connections: after a failure they may be dead (Redis restarted)."""
        for client in (self.redis, self.publisher):
            try:
                await client.connection_pool.disconnect(inuse_connections=False)
            except Exception:
                logger.debug("Closing idle broker connections failed.", exc_info=True)

    def unavailable(self, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"The broker at {self.safe_url} is unavailable: {str(exc) or type(exc).__name__}")

    def key(self, kind: str, name: str) -> bytes:
        return f"{self.prefix}{kind}:{name}".encode()

    # -- publishing: queued, pipelined in order --

    def _queue_publish(self, channel: bytes, wire: bytes, done: concurrent.futures.Future[None]) -> None:
        self.publishes.append((channel, wire, done))
        if self.publishing is None:
            self.publishing = self.loop.create_task(self._publish())

    async def _publish(self) -> None:
        try:
            while self.publishes:
                batch, self.publishes = self.publishes, []
                try:
                    async with self.publisher.pipeline(transaction=False) as pipe:
                        for channel, wire, _ in batch:
                            pipe.publish(channel, wire)
                        await pipe.execute()
                except asyncio.CancelledError:
                    closed = BrokerUnavailable("The app shut down while publishing: the message may not be out.")
                    for _, _, done in batch:
                        _settle(done, error=closed)
                    raise
                except self.failures as exc:
                    await self._drop_idle()
                    error = self.unavailable(exc)
                    for _, _, done in batch:
                        _settle(done, error=error)
                else:
                    for _, _, done in batch:
                        _settle(done)
        finally:
            self.publishing = None

    # -- membership: subscriptions and tallies --

    async def _joined(self, group: str) -> None:
        self._start()
        new = group not in self.subscribed
        self.subscribed.add(group)
        if not self.tried.is_set():
            # The first subscribing connection is on its way: the join waits for it, not for an outage.
            try:
                await asyncio.wait_for(self.tried.wait(), TIMEOUT)
            except (TimeoutError, asyncio.TimeoutError):
                pass
        connection = self.connection
        if new and connection is not None and group in self.subscribed:  # not left meanwhile
            await self._send(connection, "SUBSCRIBE", self.key("g", group))  # again if it already did: harmless
        fence = self._fence(connection)
        await self.tallies.changed(group)
        await fence

    async def _left(self, group: str) -> None:
        if group in self.subscribed and self.hub.local_count(group) == 0:
            self.subscribed.discard(group)
            if self.connection is not None:
                await self._send(self.connection, "UNSUBSCRIBE", self.key("g", group))
        await self.tallies.changed(group)

    def _fence(self, connection: t.Any) -> asyncio.Future[None]:
        """Done when Redis has answered a PING sent now on the subscribing connection.

        Done at once without one (Redis is down: the subscription is restored later).
        """
        waiter = self.loop.create_future()
        if connection is None or connection is not self.connection:
            waiter.set_result(None)
            return waiter
        token = f"fence-{next(self.tokens)}".encode()
        self.fences.append((token, waiter))
        self.loop.create_task(self._send(connection, "PING", token))
        return waiter

    async def _send(self, connection: t.Any, *command: t.Any) -> None:
        """Send on the subscribing connection; if it fails, the reader finds the connection broken."""
        try:
            await connection.send_command(*command)
        except self.failures:
            pass

    # -- the subscription --

    async def _subscription(self) -> None:
        backoff = BACKOFF[0]
        while not self.closing:
            connection = self.subscriber_pool.make_connection()
            try:
                # Bounded: a proxy whose backend is away can accept and then say nothing.
                await asyncio.wait_for(connection.connect(), TIMEOUT)
                groups = set(self.subscribed)
                # A connection in subscribed mode answers PING as a message: subscribed to something now.
                channels = [self.key("g", g) for g in sorted(groups)] or [self.key("w", self.worker)]
                await connection.send_command("SUBSCRIBE", *channels)
                self.connection = connection
                joined = self.subscribed - groups  # while SUBSCRIBE was being sent: they sent none
                if joined:
                    await connection.send_command("SUBSCRIBE", *(self.key("g", g) for g in sorted(joined)))
                self.tried.set()
                if self.lost_since is not None:
                    logger.warning(
                        "The broker at %s is back after %.1f s: %d groups subscribed again.",
                        self.safe_url,
                        time.monotonic() - self.lost_since,
                        len(groups),
                    )
                    self.lost_since = None
                    await self._drop_idle()
                    self.tallies.rewrite_all()
                backoff = BACKOFF[0]
                health = self.loop.create_task(self._check_health(connection))
                try:
                    await self._read(connection)
                finally:
                    health.cancel()
            except self.failures as exc:
                if self.closing:
                    return
                self._lost(exc)
            finally:
                self.connection = None
                self.tried.set()
                await connection.disconnect()
                while self.fences:  # a join does not wait for Redis to come back
                    _, waiter = self.fences.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
            if not self.closing:
                await asyncio.sleep(backoff * _jitter.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF[1])

    def _lost(self, exc: BaseException) -> None:
        if self.lost_since is None:
            self.lost_since = time.monotonic()
            logger.error(
                "Lost the broker at %s (%s): messages published until it is back are not delivered to this"
                " worker's members; websockets stay open, and the worker reconnects by itself.",
                self.safe_url,
                str(exc) or type(exc).__name__,
            )
            tell_behind(self.hub.app, None, lost=True)

    async def _read(self, connection: t.Any) -> None:
        prefix = len(self.prefix.encode()) + 2  # bytes: the channel names are bytes
        while True:
            waiting = self.in_flight + self.hub.backlog()
            if waiting > MAX_IN_FLIGHT:
                self.hub.falling_behind(f"{waiting} messages wait for delivery; reading from Redis paused", None)
                self.paused = True
                try:
                    while self.in_flight + self.hub.backlog() > MAX_IN_FLIGHT:
                        await asyncio.sleep(0.01)
                finally:
                    self.paused, self.read_at = False, time.monotonic()
            reply = await connection.read_response()
            self.read_at = time.monotonic()
            kind = reply[0]
            if kind == b"message":
                if not self.batch:
                    self.loop.call_soon(self._hand_over)
                self.batch.append((reply[1][prefix:].decode(errors="replace"), reply[2]))
            elif kind == b"pong":
                token = reply[1]
                while self.fences:
                    fence, waiter = self.fences.popleft()
                    if not waiter.done():
                        # Deliveries read before the PONG are handed over first.
                        self._hand_over()
                        waiter.set_result(None)
                    if fence == token:
                        break

    def _hand_over(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        loops = list(self.hub.rooms)
        with self.in_flight_lock:
            self.in_flight += len(batch) * len(loops)
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._deliver, loop, batch)
            except RuntimeError:
                with self.in_flight_lock:
                    self.in_flight -= len(batch)

    def _deliver(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, bytes]]) -> None:
        try:
            self.hub.deliver_here(loop, batch)
        finally:
            with self.in_flight_lock:
                self.in_flight -= len(batch)

    async def _check_health(self, connection: t.Any) -> None:
        """Reconnect when nothing, not even a PING's answer, is read for TIMEOUT s of reading (not of pause)."""
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            sent = time.monotonic()
            answered = self._fence(connection)
            while not answered.done():
                silent = 0.0 if self.paused else time.monotonic() - max(sent, self.read_at)
                if silent >= TIMEOUT:
                    logger.warning("The broker at %s did not answer within %g s; reconnecting.", self.safe_url, TIMEOUT)
                    await connection.disconnect()
                    return
                await asyncio.wait({answered}, timeout=TIMEOUT - silent)

    async def _close(self) -> None:
        self.closing = True
        # Everything under way stops first (a tally written after forget() would outlive the worker);
        # a publish it interrupts fails.
        running = [task for task in (*self.tasks, self.publishing, self.tallies.flushing) if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        closed = BrokerUnavailable("The app is shutting down: its broker connection is closed.")
        for _, _, done in self.publishes:
            _settle(done, error=closed)
        try:
            await self.tallies.forget()
        finally:
            for client in (self.redis, self.publisher):
                await client.aclose()
                # aclose() leaves a pool it was given open: its connections would be closed when collected, loop gone.
                await client.connection_pool.disconnect()
            await self.subscriber_pool.disconnect()


def _report_end(task: asyncio.Task[None]) -> None:
    """The subscription and the heartbeat run until the app shuts down: say so if one ends early."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("A broker task stopped: %r", task, exc_info=task.exception())


def _settle(done: concurrent.futures.Future[None], error: BaseException | None = None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
