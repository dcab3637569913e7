"""The thread-to-loop primitive (flask_asyncws._portal) on a real loop in a real thread."""

from __future__ import annotations

import asyncio
import threading
import time
import typing as t
import warnings

import pytest

from flask_asyncws import await_, run_sync
from flask_asyncws._portal import POLL_SECONDS, LoopClosed, Portal, current_portal, settle

#: Generous: a busy 2-core machine must not make these fail.
TIMEOUT = 10.0


class LoopThread:
    """An event loop running in a thread of its own, closed by :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.loop.run_forever()
        self.loop.close()

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@pytest.fixture
def loop_thread() -> t.Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def in_thread(fn: t.Callable[[], t.Any]) -> t.Any:
    """Run ``fn`` in a new thread and return (or raise) its outcome, failing if it hangs."""
    outcome: list[tuple[bool, t.Any]] = []

    def target() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert outcome, "the thread is still waiting"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def test_a_bound_thread_waits_on_the_loop_through_its_portal(loop_thread: LoopThread) -> None:
    async def where() -> asyncio.AbstractEventLoop:
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    def bound() -> tuple[t.Any, ...]:
        assert current_portal() is None
        with Portal(loop_thread.loop) as portal:
            seen = current_portal()
            ran_on = await_(where())  # await_ in a bound thread goes through its portal
            direct = run_sync(threading.get_ident)  # a thread of its own may block: called here
        return seen is portal, ran_on, direct, current_portal()

    is_bound, ran_on, direct, after = in_thread(bound)
    assert is_bound and ran_on is loop_thread.loop
    assert direct != loop_thread.thread.ident
    assert after is None


def test_a_wait_gives_up_once_the_loop_closes(loop_thread: LoopThread) -> None:
    portal = Portal(loop_thread.loop)
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def wait() -> float:
        begun = time.monotonic()
        with pytest.raises(LoopClosed):
            portal.run(forever())
        return time.monotonic() - begun

    def close_soon() -> None:
        assert started.wait(TIMEOUT)
        loop_thread.close()

    closer = threading.Thread(target=close_soon, daemon=True)
    closer.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the task dies pending with its loop
        waited = in_thread(wait)
    closer.join(TIMEOUT)
    assert waited < TIMEOUT - POLL_SECONDS


def test_interrupt_stops_the_wait_in_progress_and_every_later_one(loop_thread: LoopThread) -> None:
    portal = Portal(loop_thread.loop)
    started = threading.Event()
    stop = RuntimeError("server shutting down")

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def never_run() -> None:
        raise AssertionError("a wait after an interrupt must not start")

    def wait() -> list[BaseException]:
        raised = []
        for coro in (forever(), never_run()):
            try:
                portal.run(coro, "send")
            except RuntimeError as exc:
                raised.append(exc)
        return raised

    threading.Timer(0, lambda: started.wait(TIMEOUT) and portal.interrupt(stop)).start()
    assert in_thread(wait) == [stop, stop]


def test_depart_leaves_a_receive_to_the_websocket_and_stops_other_waits(loop_thread: LoopThread) -> None:
    loop = loop_thread.loop
    portal = Portal(loop)
    gone = ConnectionError("client left")
    message: asyncio.Future[str] = asyncio.run_coroutine_threadsafe(_future(), loop).result(TIMEOUT)
    receiving, blocked = threading.Event(), threading.Event()

    async def receive() -> str:
        receiving.set()
        return await message

    async def forever() -> None:
        blocked.set()
        await asyncio.Event().wait()

    def handler() -> list[t.Any]:
        # A receive in progress is not stopped: it returns what came before the departure.
        seen: list[t.Any] = [portal.run(receive(), "receive")]
        # Between waits: a websocket call takes the departure over (the websocket reports it) ...
        portal.depart(gone)
        seen.append(portal.run(asyncio.sleep(0, "sent"), "send"))
        seen.append(portal.run(asyncio.sleep(0, "then"), None))
        # ... and a wait on anything else raises it, once.
        portal.depart(gone)
        for result in ("not reached", "after"):
            try:
                seen.append(portal.run(asyncio.sleep(0, result), None))
            except ConnectionError as exc:
                seen.append(exc)
        # A wait in progress on anything else is stopped with it.
        try:
            portal.run(forever(), None)
        except ConnectionError as exc:
            seen.append(exc)
        return seen

    def depart_twice() -> None:
        assert receiving.wait(TIMEOUT)
        portal.depart(gone)
        loop.call_soon_threadsafe(message.set_result, "held")
        assert blocked.wait(TIMEOUT)
        portal.depart(gone)

    helper = threading.Thread(target=depart_twice, daemon=True)
    helper.start()
    assert in_thread(handler) == ["held", "sent", "then", gone, "after", gone]
    helper.join(TIMEOUT)


def test_settle_hands_an_outcome_back_and_ignores_a_closed_loop() -> None:
    lt = LoopThread()
    loop = lt.loop
    future: asyncio.Future[int] = asyncio.run_coroutine_threadsafe(_future(), loop).result(TIMEOUT)
    settle(loop, future, True, 42)
    settle(loop, future, False, RuntimeError("late"))  # a future already done is left alone
    assert asyncio.run_coroutine_threadsafe(_result(future), loop).result(TIMEOUT) == 42
    lt.close()
    settle(loop, future, True, 0)  # nobody waits any more: no error


async def _future() -> asyncio.Future[t.Any]:
    return asyncio.get_running_loop().create_future()


async def _result(future: asyncio.Future[int]) -> int:
    return await future
