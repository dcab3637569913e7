"""docs/servers.md, claim by claim, over real server processes (tests/support/server_app.py).

Daphne and granian run only as their own process; hypercorn and uvicorn run the
same way where a claim covers all four servers (every close reaches the client).
"""

from __future__ import annotations

import json
import logging
import signal
import time
import typing as t
import urllib.request

import pytest
from support.servers import ALL_SERVERS, DocsServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def processes() -> t.Iterator[t.Callable[[str], DocsServer]]:
    """One process per server for the module, started when first asked for."""
    started: dict[str, DocsServer] = {}

    def get(server: str) -> DocsServer:
        if server not in started:
            started[server] = DocsServer(server).start()
        return started[server]

    yield get
    for process in started.values():
        process.__exit__()


def refused(url: str, **kwargs: t.Any) -> t.Any:
    """The HTTP response of a refused handshake."""
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=10, **kwargs)
    return info.value.response


# -- every close the library sends reaches the client, on all four servers --

CLOSES = {
    "normal": ("/close/1000", 1000, "closing with 1000"),
    "going away": ("/close/1001", 1001, "closing with 1001"),
    "policy: too many unread": ("/busy", 1008, "too many unread messages"),
    "error after accept": ("/error", 1011, ""),
    "app's own code": ("/close/4000", 4000, "closing with 4000"),
}


@pytest.mark.parametrize("server", ALL_SERVERS)
@pytest.mark.parametrize("case", list(CLOSES))
def test_every_close_reaches_the_client_as_a_close_frame(
    processes: t.Callable[[str], DocsServer], server: str, case: str
) -> None:
    path, code, reason = CLOSES[case]
    srv = processes(server)
    if path != "/busy":
        messages = ["x" * 4000]
    elif server == "granian":
        # Two messages over ASYNCWS_MAX_QUEUE_SIZE together, then nothing: granian drops the
        # connection as soon as it has sent a close frame, and the kernel answers data the
        # client sent meanwhile with a reset, which can destroy the frame (docs/servers.md).
        messages = ["x" * 40_000] * 2
    else:
        messages = ["x" * 4000] * 100  # still sending when closed
    with connect(srv.ws_url + path, open_timeout=10) as ws:
        try:
            for message in messages:
                ws.send(message)
        except ConnectionClosed:
            pass  # /busy: closed while still sending
        deadline = time.monotonic() + 5
        while ws.protocol.close_rcvd is None:
            assert time.monotonic() < deadline, "no close frame within 5 s"
            time.sleep(0.01)
        frame = ws.protocol.close_rcvd
        # And the connection ends: a client closed while still sending is read off
        # (hypercorn's reader would otherwise block on its full queue to the app, and
        # the connection outlive its close: 20 s, or for ever on Python 3.12.1+).
        closing = time.monotonic()
        ws.close()
        assert time.monotonic() - closing < 5, "the connection outlived its close"
    if server == "daphne":
        # Daphne sends no reason, and no code below 3000 but 1000.
        assert (frame.code, frame.reason) == (code if code == 1000 or code >= 3000 else 1000, "")
    else:
        assert (frame.code, frame.reason) == (code, reason)


# -- daphne ------------------------------------------------------------------


def test_daphne_serves_http_and_websockets_but_runs_no_lifespan(tmp_path: t.Any) -> None:
    record = tmp_path / "record"
    with DocsServer("daphne", env={"ASYNCWS_TEST_RECORD": str(record)}) as srv:
        assert srv.get("/hello") == b"hello"
        with connect(srv.ws_url + "/echo", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
        # Daphne has no lifespan support: before_serving and after_serving never run.
        assert b'"serving":false' in srv.get("/seen").replace(b" ", b"")
        assert srv.stop() == 0
    assert record.read_text().splitlines() == ["teardown WebsocketDisconnect"]  # no before_ or after_serving


def test_daphne_refusals_are_a_bare_403_before_the_upgrade(processes: t.Callable[[str], DocsServer]) -> None:
    srv = processes("daphne")
    for path in ("/deny", "/abort", "/silent"):
        started = time.monotonic()
        response = refused(srv.ws_url + path)
        assert response.status_code == 403, path
        assert "x-why" not in response.headers
        assert time.monotonic() - started < 5, path  # not daphne's 20 s wait for an abandoned handshake


def test_daphne_accepts_a_subprotocol_and_drops_accept_headers_with_a_warning(
    processes: t.Callable[[str], DocsServer],
) -> None:
    srv = processes("daphne")
    assert_subprotocol_chosen_and_accept_headers_dropped(srv)
    # Visible at daphne's default verbosity.
    warning = [line for line in srv.output.splitlines() if "Accept headers" in line]
    assert len(warning) == 1 and "WARNING" in warning[0], srv.output
    assert "Accept headers 'x-extra' for '/headers' were not sent" in warning[0]


def test_daphne_tells_the_app_the_clients_close_code_without_reason(
    processes: t.Callable[[str], DocsServer],
) -> None:
    srv = processes("daphne")
    assert_app_sees_close(srv, [4001, ""])


def test_daphne_largest_incoming_message_is_1_mib(processes: t.Callable[[str], DocsServer]) -> None:
    srv = processes("daphne")
    # Daphne (autobahn) drops the connection without a close frame.
    assert close_after_the_largest_message(srv, 2**20, timeout=10) is None


def test_daphne_pings_at_its_ping_interval(caplog: pytest.LogCaptureFixture) -> None:
    # Every 20 s by default; the option docs/servers.md names makes it 1 s here.
    with DocsServer("daphne", args=["--ping-interval", "1"]) as srv:
        with caplog.at_level(logging.DEBUG, logger="websockets.client"):
            with connect(srv.ws_url + "/echo", open_timeout=10, ping_interval=None) as ws:
                deadline = time.monotonic() + 10
                while not any("< PING" in r.getMessage() for r in caplog.records):
                    assert time.monotonic() < deadline, "no ping from daphne"
                    time.sleep(0.05)
                ws.send("still open")
                assert ws.recv(timeout=5) == "still open"


def test_daphne_closes_a_websocket_after_websocket_timeout() -> None:
    # After 24 hours by default; 1 s here. A close frame with 1000.
    with DocsServer("daphne", args=["--websocket_timeout", "1"]) as srv:
        with connect(srv.ws_url + "/echo", open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1000


def assert_subprotocol_chosen_and_accept_headers_dropped(srv: DocsServer) -> None:
    """The app's subprotocol is chosen; the headers it adds to the accept are not sent."""
    with connect(srv.ws_url + "/subprotocol", subprotocols=["other", "chat"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
    with connect(srv.ws_url + "/headers", open_timeout=10) as ws:
        assert "x-extra" not in ws.response.headers
        ws.send("x")
        assert ws.recv(timeout=5) == "x"


def close_after_the_largest_message(srv: DocsServer, largest: int, timeout: float) -> t.Any:
    """Echo a message of ``largest`` bytes, then send one byte more: the close
    frame the client gets (None: none)."""
    with connect(srv.ws_url + "/echo", max_size=None, open_timeout=10) as ws:
        ws.send(b"x" * largest)
        assert len(ws.recv(timeout=timeout)) == largest
        with pytest.raises(ConnectionClosed) as info:
            ws.send(b"x" * (largest + 1))
            ws.recv(timeout=timeout)
    return info.value.rcvd


def assert_app_sees_close(srv: DocsServer, expected: list[t.Any]) -> None:
    with connect(srv.ws_url + "/wait", open_timeout=10) as ws:
        ws.send("x")
        ws.close(4001, "bye")
    deadline = time.monotonic() + 5
    while b"4001" not in (seen := srv.get("/seen")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b'"disconnect":' + str(expected).replace(" ", "").replace("'", '"').encode() in seen.replace(b" ", b"")


# -- granian -----------------------------------------------------------------


def test_granian_serves_http_websockets_and_the_lifespan(tmp_path: t.Any) -> None:
    record = tmp_path / "record"
    with DocsServer("granian", env={"ASYNCWS_TEST_RECORD": str(record)}) as srv:
        assert srv.get("/hello") == b"hello"
        assert b'"serving":true' in srv.get("/seen").replace(b" ", b"")
        with connect(srv.ws_url + "/echo", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
        assert srv.stop() == 0
    assert record.read_text().splitlines() == ["before_serving", "teardown WebsocketDisconnect", "after_serving"]


def test_granian_refuses_with_the_apps_response(processes: t.Callable[[str], DocsServer]) -> None:
    srv = processes("granian")
    response = refused(srv.ws_url + "/deny")
    assert (response.status_code, response.headers["x-why"], bytes(response.body)) == (401, "token", b"go away")
    assert refused(srv.ws_url + "/abort").status_code == 404
    assert refused(srv.ws_url + "/silent").status_code == 403


def test_granian_accepts_a_subprotocol_and_drops_accept_headers(processes: t.Callable[[str], DocsServer]) -> None:
    srv = processes("granian")
    assert_subprotocol_chosen_and_accept_headers_dropped(srv)


def test_granian_tells_the_app_the_clients_close_code_without_reason(
    processes: t.Callable[[str], DocsServer],
) -> None:
    srv = processes("granian")
    assert_app_sees_close(srv, [4001, ""])


def test_granian_largest_incoming_message_is_16_mib(processes: t.Callable[[str], DocsServer]) -> None:
    srv = processes("granian")
    # Granian ends the connection with no close code (a bare close frame or none).
    rcvd = close_after_the_largest_message(srv, 2**24, timeout=20)
    assert rcvd is None or rcvd.code == 1005


REFUSALS = {
    "app's response": ("/deny", {}, 401),
    "app's response after a wait": ("/deny-later", {}, 401),
    "refused handshake": ("/echo", {"origin": "http://elsewhere.example"}, 403),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_granian_exits_cleanly_after_serving_a_refusal(refusal: str, sig: int) -> None:
    path, options, status = REFUSALS[refusal]
    with DocsServer("granian") as srv:
        assert refused(srv.ws_url + path, **options).status_code == status
        assert srv.stop(sig) == 0  # at once: the refusal is the last thing served
        output = srv.output
    assert "panicked" not in output and "Cannot drop pointer" not in output, output
    assert "Granian shutdown completed" in output


# -- shutdown with a websocket open (SIGTERM) ------------------------------------


def shut_down_with_a_websocket_open(server: str, record: t.Any) -> t.Any:
    """SIGTERM while a handler waits in receive(); the close frame the client got (None: none)."""
    with DocsServer(server, env={"ASYNCWS_TEST_RECORD": str(record)}) as srv:
        with connect(srv.ws_url + "/wait", open_timeout=10) as ws:
            ws.send("x")
            deadline = time.monotonic() + 5
            while "wait accepted" not in (record.read_text() if record.exists() else ""):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert srv.stop(None) == 0
        assert "panicked" not in srv.output
    return info.value.rcvd


def test_granian_shutdown_drops_open_websockets_and_runs_after_serving(tmp_path: t.Any) -> None:
    record = tmp_path / "record"
    assert shut_down_with_a_websocket_open("granian", record) is None  # granian sends no close frame
    lines = record.read_text().splitlines()
    assert lines[:2] == ["before_serving", "wait accepted"]
    assert "after_serving" in lines
    # Granian runs the lifespan shutdown alongside the connections' ends and may exit before
    # the handler learns that the client is gone: its teardown is not guaranteed.
    assert set(lines[2:]) <= {"after_serving", "wait disconnect 1005", "teardown WebsocketDisconnect"}


def test_daphne_shutdown_drops_open_websockets_without_their_teardown(tmp_path: t.Any) -> None:
    record = tmp_path / "record"
    assert shut_down_with_a_websocket_open("daphne", record) is None  # daphne sends no close frame
    assert record.read_text().splitlines() == ["wait accepted"]  # the app never runs again


# -- groups: the library sends group messages through each server's send --


@pytest.mark.parametrize("server", ALL_SERVERS)
def test_group_messages_reach_every_member(processes: t.Callable[[str], DocsServer], server: str) -> None:
    srv = processes(server)
    room = f"room-{server}"
    with (
        connect(f"{srv.ws_url}/group/{room}?user=ada", open_timeout=10) as a,
        connect(f"{srv.ws_url}/agroup/{room}?user=bob", open_timeout=10) as b,
    ):
        with urllib.request.urlopen(f"{srv.http_url}/group/{room}", timeout=10) as response:
            assert json.load(response) == {"count": 2, "presence": {"ada": 1, "bob": 1}}
        for i in range(20):
            (a if i % 2 else b).send(f"m{i}")
            assert a.recv(timeout=10) == b.recv(timeout=10) == f"m{i}"
        b.send(b"\x00binary")
        assert a.recv(timeout=10) == b.recv(timeout=10) == b"\x00binary"
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"{srv.http_url}/group/{room}", timeout=10) as response:
            if json.load(response) == {"count": 0, "presence": {}}:
                break
        assert time.monotonic() < deadline, "the members did not leave"
        time.sleep(0.05)
