"""A bounded pool of worker threads that run calls for the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
import typing as t

from ._log import logger
from ._portal import settle

T = t.TypeVar("T")


class WorkerPool:
    """Up to ``size`` worker threads, started as needed, that run calls for the loop.

    Leaner than ``run_in_executor`` with a ``ThreadPoolExecutor``: a call is one
    queue put to start and one ``call_soon_threadsafe`` to finish, which is a
    sizeable part of a short request. Each call runs in a copy of the caller's
    ``contextvars`` context, so nothing it sets outlives it on the thread.
    """

    #: How long :meth:`aclose` waits for busy workers to finish.
    SHUTDOWN_TIMEOUT = 5.0

    def __init__(self, size: int, name: str, on_load: t.Callable[[int, int], None] | None = None) -> None:
        self.size = size
        self.name = name
        #: Called on the loop with (busy, queued) as calls start and end; None: nothing counted.
        self.on_load = on_load
        #: Calls started and not yet finished (counted only with ``on_load``).
        self.in_flight = 0
        self.threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[tuple[t.Any, ...] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()

    def run(self, loop: asyncio.AbstractEventLoop, fn: t.Callable[..., T], *args: t.Any) -> asyncio.Future[T]:
        """Call ``fn(*args)`` in a worker; the future resolves on ``loop``."""
        future: asyncio.Future[T] = loop.create_future()
        if not self._idle.acquire(blocking=False):
            self._spawn()
        self._jobs.put((loop, future, contextvars.copy_context(), fn, args))
        if self.on_load is not None:
            self._loaded(1)
            future.add_done_callback(lambda _: self._loaded(-1))
        return future

    def _loaded(self, change: int) -> None:
        """Tell ``on_load`` the calls running (at most one per thread) and waiting for a thread."""
        self.in_flight += change
        busy = min(self.in_flight, len(self.threads))
        self.on_load(busy, self.in_flight - busy)  # type: ignore[misc]

    def _spawn(self) -> None:
        with self._lock:
            if len(self.threads) >= self.size:
                return  # all busy: the job waits for the first one free
            thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self.threads)}", daemon=True)
            self.threads.append(thread)
        thread.start()

    def _work(self) -> None:
        jobs = self._jobs
        while (job := jobs.get()) is not None:
            loop, future, context, fn, args = job
            try:
                outcome: tuple[bool, t.Any] = (True, context.run(fn, *args))
            except BaseException as exc:
                outcome = (False, exc)
            del job, context, args
            settle(loop, future, *outcome)
            del outcome
            self._idle.release()

    async def aclose(self) -> None:
        """Stop every worker once its current call returns."""
        for _ in self.threads:
            self._jobs.put(None)

        def join() -> None:
            for thread in self.threads:
                thread.join()

        try:
            await asyncio.wait_for(asyncio.to_thread(join), self.SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            busy = [thread.name for thread in self.threads if thread.is_alive()]
            logger.warning("HTTP worker threads still busy at shutdown: %s", ", ".join(busy))
