"""Reports code that blocks the event loop, with the stack where it blocks.

A sync handler runs on the event loop, so ``time.sleep()`` or a blocking
driver call in it stalls every other connection. That is easy to do and hard
to notice, so each loop serving websockets gets a :class:`Watchdog`: the loop
stamps a heartbeat every few milliseconds, and a daemon thread that finds the
heartbeat stale logs a warning on the ``flask_asyncws`` logger naming the
websocket being served and the loop thread's stack *at that moment*, which is
where it is blocked. ``run_sync()`` is the cure the warning suggests.

The hot path pays nothing per message: the heartbeat is one timer callback per
interval, and it only runs while a watched connection is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import traceback
import types
import typing as t

from ._log import logger

#: A label, or a function giving it when a report is made (the endpoint of a
#: connection is known only once its request context is pushed).
Label: t.TypeAlias = "str | t.Callable[[], str]"

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: Live watchdogs by loop; each removes itself when its loop closes.
_watchdogs: dict[asyncio.AbstractEventLoop, Watchdog] = {}
_watchdogs_lock = threading.Lock()

#: Called (from the watchdog's thread) for each blocked-loop warning: the
#: metrics' counter (:mod:`flask_asyncws.metrics`) when they are on.
blocked_listeners: list[t.Callable[[], None]] = []


def watchdog_for(threshold_ms: float, loop: asyncio.AbstractEventLoop | None = None) -> Watchdog:
    """The watchdog of ``loop`` (default: the running loop), made on first use.

    One per loop: the first caller's ``threshold_ms`` wins, as every app on a
    loop shares its delays.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    with _watchdogs_lock:
        dog = _watchdogs.get(loop)
        if dog is None:
            dog = _watchdogs[loop] = Watchdog(loop, threshold_ms / 1000)
        return dog


class Watchdog:
    """Watches one event loop for stretches longer than ``threshold`` seconds.

    A report names a watched connection only when that connection's task has
    held the loop by itself for over ``threshold``: it was running at two
    samples that far apart with no heartbeat between them. A loop merely busy
    with many short steps (a burst of connections ending at shutdown) is not
    any handler's fault and is not reported.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float) -> None:
        if threshold <= 0:
            raise ValueError("The blocking threshold must be positive.")
        self.loop = loop
        self.threshold = threshold
        #: Heartbeat period; a quarter of the threshold keeps reports prompt.
        self.interval = threshold / 4
        self._labels: dict[asyncio.Task[t.Any], Label] = {}
        self._beat = time.monotonic()
        self._reported_beat: float | None = None
        #: The task seen running, the heartbeat then, and since when.
        self._suspect: tuple[asyncio.Task[t.Any] | None, float, float] = (None, 0.0, 0.0)
        self._loop_thread: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loop side --------------------------------------------------------

    @contextlib.contextmanager
    def watching(self, label: Label) -> t.Iterator[None]:
        """Name the current task ``label`` in reports while the block runs.

        Call it on the loop, in the task serving the connection.
        """
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("Watchdog.watching() must be used in a task on the watched loop.")
        previous = self.watch(task, label)
        try:
            yield
        finally:
            self.unwatch(task, previous)

    def watch(self, task: asyncio.Task[t.Any], label: Label) -> Label | None:
        """Start naming ``task`` ``label`` in reports; returns the label it replaces."""
        previous = self._labels.get(task)
        self._labels[task] = label
        if self._timer is None:
            self._start()
        return previous

    def unwatch(self, task: asyncio.Task[t.Any], previous: Label | None = None) -> None:
        """Stop naming ``task``; the heartbeat stops at its next tick once none is left."""
        if previous is None:
            self._labels.pop(task, None)
        else:
            self._labels[task] = previous
        self._resumed()

    def _start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._tick()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._watch, name="flask_asyncws-watchdog", daemon=True)
            self._thread.start()
        self._wake.set()

    def _tick(self) -> None:
        now = self._resumed()
        self._beat = now
        # Keep beating while anything is watched; connections come and go
        # faster than restarting the timer for each would be worth.
        self._timer = self.loop.call_later(self.interval, self._tick) if self._labels else None

    def _resumed(self) -> float:
        """Log how long a reported block lasted, once the loop runs again."""
        now = time.monotonic()
        reported = self._reported_beat
        if reported is not None:
            self._reported_beat = None
            logger.info("The event loop ran again after being blocked for %.0f ms.", (now - reported) * 1000)
        return now

    # -- watchdog thread ------------------------------------------------

    def _watch(self) -> None:
        try:
            self._watch_until_closed()
        finally:
            with _watchdogs_lock:
                if _watchdogs.get(self.loop) is self:
                    del _watchdogs[self.loop]

    def _watch_until_closed(self) -> None:
        while not self.loop.is_closed():
            if self._timer is None:
                self._wake.clear()
                if self._timer is None:
                    self._wake.wait(1.0)
                continue
            time.sleep(self.interval)
            self._sample()

    def _sample(self) -> None:
        task, beat, now = asyncio.current_task(self.loop), self._beat, time.monotonic()
        suspect, suspect_beat, since = self._suspect
        if task is None or task is not suspect or beat != suspect_beat:
            self._suspect = (task, beat, now)
            return
        held = now - since
        if held > self.threshold and self._reported_beat != beat and self._timer is not None:
            label = self._labels.get(task)
            if label is not None:
                self._reported_beat = beat
                self._report(label, held)

    def _report(self, label: Label, blocked: float) -> None:
        for listener in blocked_listeners:
            listener()
        frame = sys._current_frames().get(self._loop_thread or 0)
        if frame is None:
            stack = "(stack unavailable)"
        else:
            stack = "".join(traceback.format_list(_from_user_code(frame))).rstrip("\n")
        logger.warning(
            "Websocket %s has blocked the event loop for over %.0f ms; every other connection is waiting."
            " Run blocking calls with run_sync(). It is blocked here:\n%s",
            label if isinstance(label, str) else label(),
            blocked * 1000,
            stack,
        )


def _from_user_code(frame: types.FrameType) -> traceback.StackSummary:
    """The stack of ``frame`` from where the library called user code.

    The frames above (the server, asyncio, the greenlet running the handler,
    the library's dispatch) are the same in every report and hide the line
    that matters, so the stack starts at the first frame past the library's.
    """
    stack = traceback.extract_stack(frame)
    ours = [entry.filename.startswith(_PACKAGE) for entry in stack]
    if True in ours:
        start = ours.index(True)
        while start < len(stack) and ours[start]:
            start += 1
        if start < len(stack):
            del stack[:start]
    return stack
