"""Who is in a group, across workers: each worker's tallies in Redis.

A worker writes what it counts of a group in the hash ``<prefix>p:<group>``:
``c:<worker>``, its connections, and ``p:<worker>:<presence>`` per presence
value. It keeps ``<prefix>w:<worker>`` alive with a TTL of
``ASYNCWS_PRESENCE_TTL``. ``count`` and ``presence`` add up the fields of
live workers and remove a dead worker's, so a worker killed outright drops
out within the TTL, with no action by anyone; the live workers' heartbeats
remove them too, in case nobody counts. A worker that finds itself
counted dead (its heartbeat key expired while it stalled) writes its tallies
again.

Runs on the broker's loop (:mod:`~flask_asyncws._broker`).
"""

from __future__ import annotations

import asyncio
import collections
import typing as t

from redis.exceptions import RedisError

from ._log import logger

#: The groups a heartbeat sweeps of dead workers' tallies.
SWEEP_PER_BEAT = 20
#: Errors that mean Redis could not be reached or did not answer.
FAILURES = (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, RedisError)


class Tallies:
    """This worker's tallies in Redis, written when they change, and everyone's, read."""

    def __init__(
        self,
        redis: t.Any,
        key: t.Callable[[str, str], bytes],
        worker: str,
        ttl: float,
        snapshot: t.Callable[[], dict[str, tuple[int, dict[str, int]]]],
    ) -> None:
        self.redis = redis
        self.key = key
        self.worker = worker
        self.ttl_ms = max(1, round(ttl * 1000))
        self.snapshot = snapshot
        self.dirty: set[str] = set()
        #: The fields written per group: those to delete when they drop to zero.
        self.written: dict[str, set[bytes]] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.flushing: asyncio.Task[None] | None = None
        #: This worker's groups not swept since the last round.
        self.unswept: collections.deque[str] = collections.deque()

    async def changed(self, group: str) -> None:
        """Write this worker's tallies of ``group``; return once written (or Redis failed: then later)."""
        self.dirty.add(group)
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.flush_soon()
        await waiter

    def rewrite_all(self) -> None:
        """Redis lost them (restarted, or counted this worker dead): write every tally again.

        The groups written before are rewritten too: those now empty lose this worker's fields.
        """
        for group in {*self.snapshot(), *self.written, *self.dirty}:
            asyncio.get_running_loop().create_task(self.changed(group))

    def flush_soon(self) -> None:
        if self.flushing is None and self.dirty:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.dirty:
                groups, self.dirty = self.dirty, set()
                waiters, self.waiters = self.waiters, []
                try:
                    await self._write(groups, self.snapshot())
                except FAILURES:
                    # Written again at the next heartbeat, or once Redis is back; not at once (a busy loop).
                    self.dirty |= groups
                    return
                finally:
                    _wake(waiters)
        except Exception:
            logger.exception("Writing this worker's group tallies to the broker failed.")
        finally:
            self.flushing = None
            waiters, self.waiters = self.waiters, []
            _wake(waiters)

    async def _write(self, groups: set[str], tallies: dict[str, tuple[int, dict[str, int]]]) -> None:
        written: dict[str, set[bytes]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            # Alive first: a reader must not take the fields below for a dead worker's.
            pipe.set(self.key("w", self.worker), 1, px=self.ttl_ms)
            for group in groups:
                key = self.key("p", group)
                count, presence = tallies.get(group, (0, {}))
                fields: dict[bytes, int] = {}
                if count:
                    fields[f"c:{self.worker}".encode()] = count
                    for name, n in presence.items():
                        fields[f"p:{self.worker}:{name}".encode()] = n
                stale = self.written.get(group, set()) - fields.keys()
                if stale:
                    pipe.hdel(key, *stale)
                elif not fields and group not in self.written:
                    # Not written since this worker started, or lost track: remove whatever it counted before.
                    pipe.hdel(key, f"c:{self.worker}".encode())
                if fields:
                    pipe.hset(key, mapping=fields)
                    pipe.pexpire(key, self.ttl_ms * 4)
                written[group] = set(fields)
            await pipe.execute()
        for group, fields_written in written.items():
            if fields_written:
                self.written[group] = fields_written
            else:
                self.written.pop(group, None)

    async def heartbeat(self) -> None:
        """Keep this worker alive in Redis, every third of the TTL, and sweep its groups."""
        while True:
            await asyncio.sleep(max(self.ttl_ms / 3000, 0.05))
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(self.key("w", self.worker), 1, px=self.ttl_ms, get=True)
                    for group in list(self.written):
                        pipe.pexpire(self.key("p", group), self.ttl_ms * 4)
                    replies = await pipe.execute()
                if replies[0] is None and self.written:
                    self.rewrite_all()
                self.flush_soon()  # what failed to be written before
                await self._sweep()
            except FAILURES:
                continue

    async def _sweep(self) -> None:
        """Remove dead workers' tallies from a few of this worker's groups.

        ``count`` and ``presence`` remove them too, but an app may never call
        them, and this worker's heartbeat keeps the group's hash alive.
        """
        if not self.unswept:
            self.unswept.extend(self.written)
        for _ in range(min(SWEEP_PER_BEAT, len(self.unswept))):
            group = self.unswept.popleft()
            if group in self.written:
                await self._live_fields(group)

    async def forget(self) -> None:
        """Remove this worker from Redis: it is shutting down."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for group, fields in self.written.items():
                pipe.hdel(self.key("p", group), *fields)
            pipe.delete(self.key("w", self.worker))
            await pipe.execute()
        self.written.clear()

    # -- everyone's --

    async def count(self, group: str) -> int:
        fields = await self._live_fields(group)
        return sum(value for field, (_, value) in fields.items() if field.startswith(b"c:"))

    async def presence(self, group: str) -> dict[str, int]:
        presence: collections.Counter[str] = collections.Counter()
        for field, (_, value) in (await self._live_fields(group)).items():
            if field.startswith(b"p:") and value > 0:
                presence[field.split(b":", 2)[2].decode(errors="replace")] += value
        return dict(presence)

    async def _live_fields(self, group: str) -> dict[bytes, tuple[bytes, int]]:
        """Each live worker's fields of ``group``: field -> (worker, value); a dead worker's are removed."""
        key = self.key("p", group)
        fields: dict[bytes, tuple[bytes, int]] = {}
        for field, value in (await self.redis.hgetall(key)).items():
            parts = field.split(b":", 2)
            if len(parts) >= 2 and value.isdigit():
                fields[field] = (parts[1], int(value))
        workers = sorted({worker for worker, _ in fields.values()})
        if not workers:
            return {}
        beats = await self.redis.mget([self.key("w", worker.decode(errors="replace")) for worker in workers])
        dead = {worker for worker, beat in zip(workers, beats, strict=True) if beat is None}
        if dead:
            await self.redis.hdel(key, *(field for field, (worker, _) in fields.items() if worker in dead))
            fields = {field: value for field, value in fields.items() if value[0] not in dead}
        return fields


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
