"""The greenlet bridge: plain (sync) code running on the event loop.

A sync handler runs in a greenlet whose parent is the coroutine that spawned it.
When the sync code needs to wait (``websocket.receive()``, an async hook),
:func:`await_` switches back to that coroutine with the awaitable, the coroutine
awaits it inside its own asyncio task, and switches the result (or exception)
back in. No thread is involved, so an open socket costs one small greenlet.

The greenlet shares the spawning task's :class:`contextvars.Context`, so Flask's
contexts pushed by the task are visible in the sync code and vice versa.

Sync code in a thread of its own (an HTTP worker, a handler in thread mode)
waits through the thread's :class:`~flask_asyncws._portal.Portal` instead;
:func:`await_` and :func:`run_sync` serve both kinds of caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
import types
import typing as t

from greenlet import GreenletExit, getcurrent, greenlet

from ._portal import current_portal, discard

T = t.TypeVar("T")

#: Each thread's idle greenlets.
_thread_state = threading.local()

#: Finished greenlets kept per thread for the next :func:`greenlet_spawn`. A new
#: greenlet gets a fresh frame stack from the OS (an mmap and a munmap, and page
#: faults on first use): reusing one is several times cheaper per connection.
IDLE_GREENLETS = 64

#: Switched to the driver by a greenlet whose job has ended.
_FINISHED = object()


class BridgeGreenlet(greenlet):  # type: ignore[misc]
    """A greenlet that runs sync jobs and hands their awaitables to its driver."""

    __slots__ = ("busy", "job", "outcome")


def _run_jobs() -> None:
    """The body of a bridge greenlet: one job, then wait for the next.

    Nothing is kept in this frame between jobs: a local referring to the
    greenlet itself would be a cycle, and one referring to a job would keep it.
    """
    while True:
        _run_job(getcurrent())  # pyright: ignore[reportArgumentType]
        getcurrent().parent.switch(_FINISHED)  # pyright: ignore[reportOptionalMemberAccess]


def _run_job(me: BridgeGreenlet) -> None:
    # Jobs come through the ``job`` slot, not as switch arguments: greenlet
    # keeps the first call's arguments for as long as the greenlet lives.
    fn, args, kwargs = me.job
    me.job = None
    try:
        # A plain call runs in the same C frame of the interpreter, a call
        # with * or ** in a new one: the C stack a suspended greenlet keeps
        # (and copies at every switch) is smaller without it.
        me.outcome = (True, fn(*args, **kwargs) if args or kwargs else fn())
    except GreenletExit:
        raise  # the greenlet is being collected: die
    except BaseException as exc:
        me.outcome = (False, exc)
    finally:
        fn = args = kwargs = None  # the error's traceback keeps this frame, not the job


def idle_greenlets() -> list[BridgeGreenlet]:
    """This thread's finished greenlets, kept for the next :func:`greenlet_spawn`."""
    idle: list[BridgeGreenlet] | None = getattr(_thread_state, "idle", None)
    if idle is None:
        idle = _thread_state.idle = []
    return idle


def in_bridge() -> bool:
    """Whether the caller is sync code in a bridge greenlet, which :func:`await_` serves by a switch.

    (A thread bound to a loop is the other place ``await_`` works: see
    :func:`~flask_asyncws._portal.current_portal`.)
    """
    return isinstance(getcurrent(), BridgeGreenlet)


class SpawnHooks:
    """What the caller of :func:`greenlet_spawn` wants to hear of the sync code's waits.

    ``interrupt`` may turn a cancellation of the spawning task into another
    exception thrown at the sync code's waiting point (a websocket disconnect,
    say). ``on_wait`` is called each time the sync code hands an awaitable
    over. ``on_slow`` is told how long the sync code held the loop whenever
    one stretch took longer than ``slow_after`` seconds.
    """

    __slots__ = ("interrupt", "on_slow", "on_wait", "slow_after")

    def __init__(
        self,
        *,
        interrupt: t.Callable[[], BaseException | None] | None = None,
        on_wait: t.Callable[[], None] | None = None,
        on_slow: t.Callable[[float], None] | None = None,
        slow_after: float = 0.0,
    ) -> None:
        self.interrupt = interrupt
        self.on_wait = on_wait
        self.on_slow = on_slow
        self.slow_after = slow_after


_NO_HOOKS = SpawnHooks()


async def greenlet_spawn(fn: t.Callable[..., T], *args: t.Any, hooks: SpawnHooks = _NO_HOOKS, **kwargs: t.Any) -> T:
    """Run the sync ``fn`` in a greenlet, serving its :func:`await_` calls (see :class:`SpawnHooks`)."""
    interrupt, on_wait, on_slow, slow_after = hooks.interrupt, hooks.on_wait, hooks.on_slow, hooks.slow_after
    current = getcurrent()
    idle = idle_greenlets()
    if idle:
        child = idle.pop()
        child.parent = current
    else:
        child = BridgeGreenlet(_run_jobs, current)
    child.gr_context = current.gr_context
    child.busy = True
    child.job = (fn, args, kwargs)
    del fn, args, kwargs  # the job's arguments live in the greenlet only
    timed = on_slow is not None
    started = time.perf_counter() if timed else 0.0
    result: t.Any = child.switch()
    while result is not _FINISHED:
        if timed:
            held = time.perf_counter() - started
            if held > slow_after:
                on_slow(held)  # type: ignore[misc]
        if on_wait is not None:
            on_wait()
        try:
            value = await result
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and interrupt is not None:
                replacement = interrupt()
                if replacement is not None:
                    exc = replacement
            if timed:
                started = time.perf_counter()
            result = child.throw(exc)
        else:
            if timed:
                started = time.perf_counter()
            result = child.switch(value)
        value = None
    if timed:
        held = time.perf_counter() - started
        if held > slow_after:
            on_slow(held)  # type: ignore[misc]
    ok, result = child.outcome
    child.outcome = None
    child.busy = False
    child.gr_context = None  # an idle greenlet keeps no context alive
    if len(idle) < IDLE_GREENLETS:
        idle.append(child)
    del child
    if ok:
        return result  # type: ignore[no-any-return]
    try:
        raise result
    finally:
        result = None  # no cycle: the error's traceback holds this frame


def await_(awaitable: t.Awaitable[T]) -> T:
    """Wait for ``awaitable`` from sync code and return its result.

    Works in a sync handler (greenlet on the loop) and in a thread bound to
    the server's loop (an HTTP worker, a handler in thread mode): see
    :mod:`flask_asyncws._portal`.
    """
    current = getcurrent()
    if isinstance(current, BridgeGreenlet):
        return current.parent.switch(awaitable)  # type: ignore[no-any-return]
    portal = current_portal()
    if portal is not None:
        return portal.run(awaitable)
    discard(awaitable)
    raise RuntimeError(
        "await_() was called outside a flask_asyncws sync handler or worker thread."
        " In an async function use 'await' instead; in other sync code run the"
        " coroutine with asyncio.run()."
    )


def hand_over(current: greenlet, awaitable: t.Awaitable[T]) -> T:
    """Wait for ``awaitable`` from the bridge greenlet ``current``: its driver awaits it.

    For what usually suspends (the next message in a request/response
    exchange): the driver's task then resumes the server's coroutine directly.
    """
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


def wait_in(current: greenlet, awaitable: t.Awaitable[T]) -> T:
    """Wait for ``awaitable`` from the bridge greenlet ``current``, trying here first.

    A coroutine is first stepped right here: most sends finish without
    suspending, and then no switch to the driver is needed; one that does
    suspend is handed over wrapped, which costs a little on every resume.
    Only for the extension's own coroutines and the server's: user coroutines
    must run outside the greenlet, where the websocket API is the async one.
    """
    if type(awaitable) is types.CoroutineType:
        try:
            pending = awaitable.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        return current.parent.switch(_resumed(awaitable, pending))  # type: ignore[no-any-return]
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


def finish_in(current: greenlet, coro: t.Awaitable[None]) -> None:
    """:func:`wait_in` for a coroutine without a result, such as the server's send.

    Stepped through its iterator, a coroutine that finishes at once ends the
    loop below without the StopIteration that ``send()`` would raise: the
    cheaper way, on the path every outgoing message takes.
    """
    if type(coro) is types.CoroutineType:
        for pending in coro.__await__():
            current.parent.switch(_resumed(coro, pending))  # pyright: ignore[reportOptionalMemberAccess]
            return
        return
    current.parent.switch(coro)  # pyright: ignore[reportOptionalMemberAccess]


def step(awaitable: t.Awaitable[None]) -> t.Awaitable[None] | None:
    """Run ``awaitable`` until it first suspends: None if it finished there, else the rest, for a task to await.

    For a server's send from plain loop code: it usually finishes without
    suspending, and then costs no task. An awaitable that is not a coroutine
    (granian's send is native, and must be awaited by a task) is returned
    unstarted.
    """
    if type(awaitable) is not types.CoroutineType:
        return awaitable
    try:
        pending = awaitable.send(None)
    except StopIteration:
        return None
    return _resumed(awaitable, pending)


@types.coroutine
def _resumed(coro: types.CoroutineType[t.Any, t.Any, t.Any], pending: t.Any) -> t.Generator[t.Any, t.Any, t.Any]:
    """The rest of a coroutine stepped in a greenlet, for its driver to await."""
    value = pending
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                value = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as done:
                return done.value


def run_sync(fn: t.Callable[..., T], *args: t.Any, **kwargs: t.Any) -> t.Any:
    """Run a blocking ``fn(*args, **kwargs)`` off the event loop.

    A sync handler must not block the loop (every other connection waits), so a
    blocking call (a sync database driver, ``requests``, ``time.sleep``) goes
    through this. In a sync handler it returns the result; in async code it
    returns an awaitable. Flask's contexts are visible in the thread.

    Where the caller already runs in a thread of its own (a handler in thread
    mode, a sync HTTP view in the worker pool), ``fn`` is simply called there:
    that thread may block, so an app can switch modes without changing code.
    """
    if current_portal() is not None:
        return fn(*args, **kwargs)
    call = functools.partial(fn, *args, **kwargs)
    if in_bridge():
        return await_(asyncio.to_thread(call))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "run_sync() needs the event loop: call it from a sync websocket"
            " handler or view, or 'await run_sync(...)' from async code."
        ) from None
    return asyncio.to_thread(call)


def make_async_to_sync(
    fallback: t.Callable[[t.Callable[..., t.Awaitable[t.Any]]], t.Callable[..., t.Any]] | None = None,
) -> t.Callable[[t.Callable[..., t.Awaitable[t.Any]]], t.Callable[..., t.Any]]:
    """Build ``Flask.async_to_sync`` that reuses the server's loop when it can.

    Async views, hooks and error handlers then run on the loop that serves the
    app, so loop-bound clients and pools can be shared across requests.
    Elsewhere (Flask's test client, ``flask run``, a CLI command) each call
    runs on a new event loop, as Flask does with asgiref, but without needing
    asgiref; ``fallback``, if given (an app's own ``async_to_sync``), is used
    there instead.
    """

    def async_to_sync(func: t.Callable[..., t.Awaitable[t.Any]]) -> t.Callable[..., t.Any]:
        fallback_wrapper: t.Callable[..., t.Any] | None = None

        @functools.wraps(func)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            nonlocal fallback_wrapper
            if in_bridge() or current_portal() is not None:
                return await_(func(*args, **kwargs))
            if fallback is None:
                return _run_in_new_loop(func, args, kwargs)
            if fallback_wrapper is None:
                fallback_wrapper = fallback(func)
            return fallback_wrapper(*args, **kwargs)

        return wrapper

    return async_to_sync


def _run_in_new_loop(func: t.Callable[..., t.Awaitable[T]], args: t.Any, kwargs: t.Any) -> T:
    """Run ``func(*args, **kwargs)`` to completion on an event loop of its own.

    Like ``asyncio.run``, but it leaves the thread's current event loop alone,
    and context variables the coroutine sets are copied back to the caller,
    as asgiref's ``async_to_sync`` does.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            f"{func.__qualname__} is async and was called as sync code on a running event loop; await it instead."
        )
    context: list[contextvars.Context] = []

    async def main() -> T:
        try:
            return await func(*args, **kwargs)
        finally:
            context.append(contextvars.copy_context())

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            if tasks:  # left running by the coroutine: cancelled, as asyncio.run() does
                for task in tasks:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
        for var, value in context[0].items() if context else ():
            if var.get(_MISSING) is not value:
                var.set(value)


_MISSING = object()


def thread_ident() -> int:
    """This thread's ident as one shared int object (not a new one per connection)."""
    ident: int | None = getattr(_thread_state, "ident", None)
    if ident is None:
        ident = _thread_state.ident = threading.get_ident()
    return ident
