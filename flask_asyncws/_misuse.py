"""Noticing a websocket call from async code that was never awaited.

``websocket.send(x)`` without ``await`` in an async handler creates a coroutine
and drops it unrun: the message is silently not sent. :class:`MisuseGuard`
keeps the coroutine the websocket last handed to async code; the next call, and
the handler's end, ask it whether that one was dropped, and the mistake is then
raised as a :class:`RuntimeError` that says what to write instead.

"Dropped" is read from the coroutine's reference count (:func:`sys.getrefcount`):
a coroutine never started that nothing but the guard holds can never run. One
still held elsewhere (by a task not yet started, by ``asyncio.gather``'s
arguments) may still run, and is not reported. That count means this only on an
interpreter that counts references exactly and at once: CPython with the GIL.
:data:`PROBE_TRUSTED` says whether the probe can be trusted here; it is False on
PyPy (no reference counts of this kind), on a free-threaded CPython build (3.13t
and later: references are counted per thread and merged late) and wherever the
calibration below does not see one reference as one. There the guard reports
nothing, and a dropped call shows only as Python's own ``RuntimeWarning:
coroutine ... was never awaited`` once the coroutine is freed (when the next call
or the connection's end lets it go, or at a later garbage collection on PyPy).
"""

from __future__ import annotations

import inspect
import sys
import types
import typing as t

T = t.TypeVar("T")

Coroutine = types.CoroutineType  # the websocket's own coroutines are plain ones


class MisuseGuard:
    """The last coroutine handed to async code, and the mistake once noticed.

    ``handed`` and ``error`` are read on the per-message path by
    :class:`~flask_asyncws._websocket.Websocket` (its fast check that the last
    coroutine has run is inline there); everything else is here.
    """

    __slots__ = ("error", "handed")

    def __init__(self) -> None:
        #: The coroutine last handed to async code, to notice a forgotten await.
        self.handed: types.CoroutineType[t.Any, t.Any, t.Any] | None = None
        #: The message of the misuse noticed, raised from then on.
        self.error: str | None = None

    def hand(self, coro: t.Coroutine[t.Any, t.Any, T]) -> t.Coroutine[t.Any, t.Any, T]:
        """Give ``coro`` to async code to await, after checking the one handed before.

        Returns ``coro``, or closes it and raises the misuse noticed (now or earlier).
        """
        if self.error is None:
            # No local name for the last one: the check counts its references.
            if self.handed is None or self.handed.cr_frame is None:
                self.handed = coro  # type: ignore[assignment]
                return coro
            self.check()
            if self.error is None:
                self.handed = coro  # type: ignore[assignment]
                return coro
        coro.close()
        self.raise_error()

    def check(self) -> str | None:
        """Notice whether the last coroutine handed out was dropped unrun.

        Returns the misuse's message when this call noticed it, else None.
        """
        if self.handed is None or not dropped_unrun(self):
            return None
        coro, self.handed = self.handed, None
        coro.close()  # never run: no "never awaited" warning on top of our report
        return self.record(coro.__name__.lstrip("_"))

    def record(self, name: str) -> str | None:
        """Record the mistake for ``websocket.<name>()``; it is raised at the next
        call or at the handler's end, and logged there once like any unhandled error."""
        if self.error is not None:
            return None
        self.error = (
            f"websocket.{name}() was called without 'await' in async code, so it did"
            f" not run. Write 'await websocket.{name}(...)'. Sync helper functions"
            " that use the websocket must be called from a sync handler."
        )
        return self.error

    def raise_error(self) -> t.NoReturn:
        raise RuntimeError(self.error)


def _refcount_of_handed(guard: t.Any) -> int:
    coro = guard.handed
    return sys.getrefcount(coro)


def _unshared_refcount() -> tuple[int, int]:
    """What :func:`_refcount_of_handed` reports for a coroutine held by nothing
    else, and for one held once more (interpreters count borrowed references
    differently)."""

    async def probe() -> None:
        pass

    guard = MisuseGuard()
    guard.handed = probe()  # type: ignore[assignment]
    try:
        alone = _refcount_of_handed(guard)
        other = guard.handed
        shared = _refcount_of_handed(guard)
        del other
        return alone, shared
    finally:
        guard.handed.close()  # type: ignore[union-attr]


def probe_trusted(implementation: str, gil_enabled: bool, counts: tuple[int, int] | None) -> bool:
    """Whether reference counts tell a dropped coroutine here: CPython with
    the GIL (``gil_enabled``: a build with a GIL, and it on), where one more
    holder counts as exactly one more reference (``counts``: the calibration's
    count for one holder and for two; None if it could not count)."""
    if implementation != "cpython" or not gil_enabled or counts is None:
        return False
    alone, shared = counts
    return shared == alone + 1


def _calibrate() -> tuple[bool, int]:
    counts: tuple[int, int] | None
    try:
        counts = _unshared_refcount()
    except Exception:  # no sys.getrefcount, or one that fails
        counts = None
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)  # Python 3.13 and later
    gil_enabled = True
    if is_gil_enabled is not None:
        import sysconfig  # only here: no free-threaded build before 3.13

        # A free-threaded build counts references per thread, with or without the GIL on.
        gil_enabled = bool(is_gil_enabled()) and not sysconfig.get_config_var("Py_GIL_DISABLED")
    trusted = probe_trusted(sys.implementation.name, gil_enabled, counts)
    return trusted, counts[0] if counts is not None else -1


#: Whether :func:`dropped_unrun` can tell a dropped call on this interpreter.
#: _UNSHARED: the count of a coroutine that only the guard holds.
PROBE_TRUSTED, _UNSHARED = _calibrate()


def dropped_unrun(guard: MisuseGuard) -> bool:
    """Whether the coroutine ``guard`` last handed out was never started and
    nothing but ``guard`` holds it: its caller dropped it without ``await``.
    One that is held (by a task not yet started, say) may still run. Always
    False where the probe cannot be trusted (see :data:`PROBE_TRUSTED`)."""
    return (
        PROBE_TRUSTED
        and inspect.getcoroutinestate(guard.handed) == inspect.CORO_CREATED  # type: ignore[arg-type]
        and _refcount_of_handed(guard) == _UNSHARED
    )
