"""The probe for calls from async code never awaited: where it is trusted, and what happens where it is not."""

from __future__ import annotations

import sys
import sysconfig
import typing as t
import warnings

import pytest
from flask import Flask

from flask_asyncws import AsyncWS, _misuse, websocket


def test_the_probe_is_trusted_only_on_cpython_with_the_gil() -> None:
    assert _misuse.probe_trusted("cpython", True, (2, 3))
    assert not _misuse.probe_trusted("pypy", True, (2, 3))
    assert not _misuse.probe_trusted("cpython", False, (2, 3))  # free-threaded, GIL off
    assert not _misuse.probe_trusted("cpython", True, (2, 2))  # one more holder did not count as one
    assert not _misuse.probe_trusted("cpython", True, None)  # no sys.getrefcount


def test_this_interpreter_is_calibrated() -> None:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)() and not sysconfig.get_config_var("Py_GIL_DISABLED")
    assert _misuse.PROBE_TRUSTED is (sys.implementation.name == "cpython" and gil)


def make_app() -> Flask:
    app = Flask(__name__)
    AsyncWS(app)

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("first")
        websocket.send("lost")  # missing await
        await websocket.send("second")

    return app


def test_a_dropped_call_is_raised_where_the_probe_is_trusted() -> None:
    with make_app().test_client().websocket("/ws") as ws:
        assert ws.receive() == "first"
        with pytest.raises(Exception) as info:
            ws.receive()
    assert getattr(info.value, "code", None) == 1011


def test_where_the_probe_is_not_trusted_only_pythons_warning_tells(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_misuse, "PROBE_TRUSTED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with make_app().test_client().websocket("/ws") as ws:
            assert ws.receive() == "first"
            assert ws.receive() == "second"  # not reported: the handler goes on
    never: list[t.Any] = [w for w in caught if "was never awaited" in str(w.message)]
    assert never and issubclass(never[0].category, RuntimeWarning), [str(w.message) for w in caught]
