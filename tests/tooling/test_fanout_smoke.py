"""The fan-out benchmark (``python -m benchmarks.fanout``) runs, in ``--quick`` mode.

Every system (flask-asyncws under hypercorn and uvicorn, Channels, python-socketio)
goes through every phase on a real redis-server and real worker processes, and
flask-asyncws delivers every message once, in order, in each: the claim its
README table rests on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from support.servers import ROOT

PHASES = ("fixed", "max", "overload")
#: The run takes a minute or two on a busy machine, inside whichever test comes first.
pytestmark = pytest.mark.timeout(700)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fanout") / "fanout.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fanout", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def results(saved: Path) -> list[dict[str, t.Any]]:
    return t.cast(list[dict[str, t.Any]], json.loads(saved.read_text())["results"])


def test_every_system_ran_every_phase(results: list[dict[str, t.Any]]) -> None:
    ran = {(r["system"], r["server"]): set(r["phases"]) for r in results}
    assert ran == {
        ("asyncws", "hypercorn"): set(PHASES),
        ("asyncws", "uvicorn"): set(PHASES),
        ("channels", "uvicorn"): set(PHASES),
        ("socketio", "uvicorn"): set(PHASES),
    }
    for result in results:
        for phase in result["phases"].values():
            assert phase["deliveries"] > 0 and phase["deliveries_per_s"] > 0, (result["system"], phase)
            assert phase["server_cpu_us_per_delivery"] > 0


def test_flask_asyncws_delivers_every_message_once_in_order(results: list[dict[str, t.Any]]) -> None:
    for result in results:
        if result["system"] != "asyncws":
            continue
        for name, phase in result["phases"].items():
            where = (result["server"], name)
            assert phase["deliveries"] == phase["expected"], where
            assert (phase["lost"], phase["duplicates"], phase["out_of_order"], phase["closed"]) == (0, 0, 0, 0), where
            assert phase["publish_errors"] == {} and phase["client_errors"] == {}, where


def test_saved_results_render_again(saved: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fanout", "--render", str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "| flask-asyncws (uvicorn) |" in done.stdout and "| python-socketio (uvicorn) |" in done.stdout
