"""The benchmark suite still runs: every configuration completes without errors.

Figures are not checked (the machine running the tests may be busy); the suite
is run in ``--quick`` mode, split over two runner processes to stay short.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Each half starts a server process per configuration.
HALVES = (("echo", "scale"), ("handshake", "memory"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the two halves write their JSON results to."""
    out = tmp_path_factory.mktemp("bench")
    procs = []
    for i, groups in enumerate(HALVES):
        command = [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out / f"{i}.json")]
        for group in groups:
            command += ["--only", group]
        procs.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
    return out


@pytest.fixture(scope="module")
def results(saved: Path) -> list[dict]:
    return [row for i in range(len(HALVES)) for row in json.loads((saved / f"{i}.json").read_text())["rows"]]


def test_saved_results_render_again(saved: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(saved / "0.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "## Echo" in done.stdout and "## Scale" in done.stdout and "## Targets" in done.stdout


def test_every_configuration_ran(results: list[dict]) -> None:
    seen = {(row["group"], row["server"], row["app"]) for row in results}
    for server in ("hypercorn", "uvicorn"):
        for app in ("sync", "async", "quart", "raw"):
            for group in ("echo", "handshake", "memory"):
                assert (group, server, app) in seen
        assert ("handshake", server, "session") in seen
        for floor in ("flask-ctx", "greenlet-ctx"):
            assert ("handshake", server, floor) in seen and ("memory", server, floor) in seen
        assert ("echo", server, "greenlet-ctx") in seen and ("echo", server, "async-ctx") in seen
        assert ("scale", server, "sync") in seen
    for group in ("echo", "handshake", "memory"):
        assert (group, "gunicorn", "flask-sock") in seen


def test_no_errors(results: list[dict]) -> None:
    for row in results:
        for run in row["runs"]:
            assert not run.get("failed"), (row["group"], row["server"], row["app"], run)
            assert run.get("errors", 0) == 0, (row["group"], row["server"], row["app"], run)


def test_work_was_measured(results: list[dict]) -> None:
    for row in results:
        for run in row["runs"]:
            if row["group"] == "memory":
                assert run["open"] == row["connections"]
            else:
                assert run["count"] > 0, (row["group"], row["server"], row["app"], run)


def test_http_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/http_bench.py", "--quick", "--connections", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # 3 only reports a missed target: figures from a one-second run are not judged here.
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert "route    ratio" in done.stdout
    for configuration in ("asgiws", "hypercorn-wsgi", "a2wsgi", "asgiws-uvicorn", "gunicorn-gthread"):
        assert configuration in done.stdout


def test_ratios_are_taken_within_rounds() -> None:
    """A slow round slows every configuration in it; the ratio must not move."""
    from benchmarks.groups import in_rounds
    from benchmarks.report import paired, ratio_range

    order: list[str] = []

    def run(case: tuple[str, str, str, str]) -> dict:
        order.append(case[0])
        speed = 1.0 if len(order) <= 2 else 0.5  # the machine halves its speed after round 0
        return {"rate": speed * (90.0 if case[0] == "mine" else 100.0)}

    cases = [("mine", "s", "a", "/"), ("raw", "s", "b", "/")]
    mine, raw = in_rounds(cases, 2, run)
    assert order == ["mine", "raw", "raw", "mine"]  # each round starts one further along
    assert [r["round"] for r in mine] == [r["round"] for r in raw] == [0, 1]
    row = {"runs": mine}
    base = {"runs": raw}
    assert paired(row, base) == pytest.approx(0.9)
    assert ratio_range(row, base) == "0.90 (0.90-0.90)"
    # Runs without rounds (memory, scale) compare medians.
    assert paired({"runs": [{"rate": 3.0}]}, {"runs": [{"rate": 4.0}]}) == 0.75


def test_echo_and_handshake_runs_carry_their_round(results: list[dict]) -> None:
    for row in results:
        if row["group"] in ("echo", "handshake"):
            assert [run["round"] for run in row["runs"]] == list(range(len(row["runs"])))


async def _against_loopback(handle: t.Any, use: t.Any) -> tuple[t.Any, t.Any]:
    """``use(connector, stats)`` with the load client aimed at a loopback server running ``handle``."""
    import argparse
    import asyncio

    from benchmarks.client import Connector, Stats

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        args = argparse.Namespace(url=f"ws://127.0.0.1:{port}/echo", cookie=None, source_addresses=1)
        stats = Stats()
        return await use(Connector(args, stats), stats), stats


def test_a_connection_closed_during_the_handshake_is_an_error() -> None:
    """picows reports such a connection as opened without a listener: the
    client must count it as an error with its kind, not silently drop it."""
    import asyncio

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(16)  # the upgrade request has arrived
        writer.close()

    opened, stats = asyncio.run(_against_loopback(hang_up, lambda connector, _: connector.open_many(3, repeat=False)))
    assert opened == []
    assert stats.errors == 3
    assert stats.error_kinds == {"connect: closed during handshake": 3}


def test_a_malformed_frame_while_closing_is_an_error() -> None:
    """Flask-Sock at 1,000 connections once answered the client's close with a
    malformed frame: the client must count it as an error with its kind, not
    crash and lose the run's figures."""
    import asyncio
    import base64
    import hashlib

    from benchmarks.client import close_all

    async def garble_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await reader.read(2)  # the client's close frame
        writer.write(b"\x08\x00")  # a close frame without FIN: control frames may not be fragmented
        await reader.read()
        writer.close()

    async def open_and_close(connector: t.Any, stats: t.Any) -> dict:
        conns = await connector.open_many(2, repeat=False)
        assert len(conns) == 2
        result: dict = {"errors": 0, "error_kinds": {}}
        await close_all(conns, stats, result)
        return result

    result, _ = asyncio.run(_against_loopback(garble_close, open_and_close))
    assert result == {"errors": 2, "error_kinds": {"close: WSProtocolError": 2}}


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
def test_every_server_listens_with_the_same_queue(server: str) -> None:
    """hypercorn listens again on the socket it is given, with its own default
    of 100: the memory runs, opening 200 connections at a time, overflowed it
    and waited out retransmissions. ``ss`` reports a listener's queue size."""
    from benchmarks.procs import Server
    from benchmarks.serve import LISTEN_BACKLOG

    ss = shutil.which("ss")
    assert ss is not None, "ss is missing: apt-get install iproute2 (`make test` installs it when missing)"
    with Server(server, "raw") as srv:
        listing = subprocess.run(
            [ss, "-ltnH", f"sport = :{srv.port}"], capture_output=True, text=True, check=True
        ).stdout.split()
    assert listing[0] == "LISTEN"
    assert int(listing[2]) == LISTEN_BACKLOG


def test_a_memory_stage_counts_each_failed_connection_once() -> None:
    """A connection the client failed to open is named among the stage's
    errors and missing from its open count: one error, not two."""
    from benchmarks.groups import _stage_run

    stages = [
        {"target": 2000, "open": 2000, "errors": 0, "error_kinds": {}, "per_connection": 1.0, "rss": 1},
        {
            "target": 10000,
            "open": 9997,
            "errors": 3,
            "error_kinds": {"connect: closed during handshake": 3},
            "per_connection": 1.0,
            "rss": 1,
        },
    ]
    run = {"stages": stages, "errors": 3, "error_kinds": {"connect: closed during handshake": 3}}
    first, second = _stage_run(run, 0), _stage_run(run, 1)
    assert (first["errors"], first["error_kinds"]) == (0, {})
    assert (second["errors"], second["error_kinds"]) == (3, {"connect: closed during handshake": 3})
    # A connection missing without a named error still counts.
    unnamed = {"stages": [{**stages[1], "errors": 0, "error_kinds": {}}]}
    assert _stage_run(unnamed, 0)["errors"] == 3
