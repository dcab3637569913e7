"""docs/servers.md, claim by claim, over real server processes (tests/server_app.py).

Daphne and granian run only as their own process; hypercorn and uvicorn run the
same way where a claim covers all four servers (every close reaches the client).
"""

from __future__ import annotations

import signal
import time
import typing as t

import pytest
from servers import ALL_SERVERS, ServerProcess
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def processes() -> t.Iterator[t.Callable[[str], ServerProcess]]:
    """One process per server for the module, started when first asked for."""
    started: dict[str, ServerProcess] = {}

    def get(server: str) -> ServerProcess:
        if server not in started:
            started[server] = ServerProcess(server).start()
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
    processes: t.Callable[[str], ServerProcess], server: str, case: str
) -> None:
    path, code, reason = CLOSES[case]
    srv = processes(server)
    with connect(srv.ws_url + path, open_timeout=10) as ws:
        try:
            for _ in range(1 if path != "/busy" else 100):
                ws.send("x" * 4000)
        except ConnectionClosed:
            pass  # /busy: closed while still sending
        # The frame itself, not the end of the connection: with the client still sending,
        # hypercorn ends the TCP connection only 20 s later (its queue to the app is full).
        deadline = time.monotonic() + 5
        while ws.protocol.close_rcvd is None:
            assert time.monotonic() < deadline, "no close frame within 5 s"
            time.sleep(0.01)
        frame = ws.protocol.close_rcvd
    if server == "daphne":
        # Daphne sends no reason, and no code below 3000 but 1000.
        assert (frame.code, frame.reason) == (code if code == 1000 or code >= 3000 else 1000, "")
    else:
        assert (frame.code, frame.reason) == (code, reason)


# -- daphne ------------------------------------------------------------------


def test_daphne_accepts_a_subprotocol_and_drops_accept_headers_with_a_warning(
    processes: t.Callable[[str], ServerProcess],
) -> None:
    srv = processes("daphne")
    with connect(srv.ws_url + "/subprotocol", subprotocols=["other", "chat"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
    with connect(srv.ws_url + "/headers", open_timeout=10) as ws:
        assert "x-extra" not in ws.response.headers
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
    # Visible at daphne's default verbosity.
    warning = [line for line in srv.output.splitlines() if "Accept headers" in line]
    assert len(warning) == 1 and "WARNING" in warning[0], srv.output
    assert "Accept headers 'x-extra' for '/headers' were not sent" in warning[0]


# -- granian -----------------------------------------------------------------


REFUSALS = {
    "app's response": ("/deny", {}, 401),
    "app's response after a wait": ("/deny-later", {}, 401),
    "refused handshake": ("/echo", {"origin": "http://elsewhere.example"}, 403),
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_granian_exits_cleanly_after_serving_a_refusal(refusal: str, sig: int) -> None:
    path, options, status = REFUSALS[refusal]
    with ServerProcess("granian") as srv:
        assert refused(srv.ws_url + path, **options).status_code == status
        assert srv.stop(sig) == 0  # at once: the refusal is the last thing served
        output = srv.output
    assert "panicked" not in output and "Cannot drop pointer" not in output, output
    assert "Granian shutdown completed" in output
