"""The README's first command on a fresh machine: `make run` from a fresh clone.

The machine is Debian's: its own Python refuses pip installs into itself
(PEP 668's EXTERNALLY-MANAGED marker) and the user is new (an empty HOME, no
pip cache, ``PIP_REQUIRE_VIRTUALENV=1``, no virtualenv active). `make run` must
create the project's own ``.venv``, install only what serving needs into it
from the package index, and serve the echo example; nothing goes into the
system Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.servers import ServerProcess, listening_socket
from test_packaging import NOT_IN_A_CLONE
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")

# How this machine reaches the package index (a proxy, a mirror, a CA bundle):
# a new user on the same machine has it too.
NETWORK = re.compile(
    r"(?i)^(https?_proxy|no_proxy|all_proxy|ssl_cert_(file|dir)|requests_ca_bundle"
    r"|pip_(index_url|extra_index_url|find_links|cert|trusted_host|default_timeout))$"
)


def system_python() -> Path:
    """Debian's Python, as a fresh machine has it: PEP 668-managed, with venv."""
    assert SYSTEM_PYTHON.exists(), (
        f"{SYSTEM_PYTHON} is needed (Debian's python3 and python3-venv; `make test` installs them when missing)"
    )
    marker = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import ensurepip, os, sysconfig; print(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'))",
        ],
        capture_output=True,
        text=True,
    )
    assert marker.returncode == 0, f"{SYSTEM_PYTHON} has no venv/ensurepip (install python3-venv): {marker.stderr}"
    assert Path(marker.stdout.strip()).is_file(), f"{SYSTEM_PYTHON} is not marked externally managed (PEP 668)"
    return SYSTEM_PYTHON


def fresh_user_env(home: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if NETWORK.match(name)}
    env.update(HOME=str(home), PATH="/usr/bin:/bin", LANG="C.UTF-8", PIP_REQUIRE_VIRTUALENV="1")
    return env


def site_packages(python: Path, env: dict[str, str]) -> dict[str, list[str] | None]:
    """What the interpreter's global and user site-packages hold (None: absent)."""
    listed = subprocess.run(
        [python, "-c", "import json, site; print(json.dumps([*site.getsitepackages(), site.getusersitepackages()]))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {path: sorted(os.listdir(path)) if os.path.isdir(path) else None for path in json.loads(listed.stdout)}


def echo(url: str, deadline: float, server: ServerProcess) -> str:
    """A message echoed at ``url``, once the server has started (it installs first)."""
    assert server.proc is not None
    while True:
        if server.proc.poll() is not None:
            pytest.fail(f"make run exited with {server.proc.returncode}:\n{server.output}")
        if time.monotonic() > deadline:
            pytest.fail(f"make run did not serve in time:\n{server.output}")
        # The socket listens already: the handshake completes once hypercorn accepts.
        try:
            with connect(url, open_timeout=5, close_timeout=5) as ws:
                ws.send("hello")
                return str(ws.recv(timeout=10))
        except TimeoutError:
            continue
        except Exception:
            try:  # a server that went away on its own says why in its log
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                raise


def dry_run(clone: Path, env: dict[str, str], *goals: str) -> list[str]:
    """The commands make would run for ``goals`` (none is run)."""
    done = subprocess.run(["make", "-n", *goals], cwd=clone, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines()]


@pytest.mark.timeout(600)
def test_make_run_on_a_fresh_debian_machine_serves_from_its_own_venv(tmp_path: Path) -> None:
    python = system_python()
    home = tmp_path / "home"
    home.mkdir()
    env = fresh_user_env(home)
    clone = tmp_path / "clone"
    shutil.copytree(ROOT, clone, ignore=NOT_IN_A_CLONE)
    before = site_packages(python, env)

    sock = listening_socket(16)
    # make and the server it starts lead a process group of their own, stopped
    # with SIGINT as Ctrl+C does.
    command = ["make", "run", f"BIND=fd://{sock.fileno()}"]
    run = ServerProcess(
        command, cwd=clone, env=env, inherit_env=False, pythonpath=None, sock=sock, new_session=True,
        exit_signal=signal.SIGINT,
    )  # fmt: skip
    with run as server:
        started = time.monotonic()
        assert echo(f"{server.ws_url}/echo", started + 420, server) == "hello"
        first_run = time.monotonic() - started
        assert echo(f"{server.ws_url}/aecho", time.monotonic() + 30, server) == "hello"
    print(f"make run served after {first_run:.1f} s (venv created, runtime installed)", file=sys.stderr)

    # The project's own virtualenv, made from the system Python...
    venv = clone / ".venv"
    config = (venv / "pyvenv.cfg").read_text()
    assert f"home = {python.parent}" in config, config
    assert "include-system-site-packages = false" in config, config
    # ...holding the package and its runtime dependencies, and nothing from an extra.
    installed = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps([[d.metadata['Name'] for d in m.distributions()], m.requires('flask-asyncws')]))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    names, requires = json.loads(installed.stdout)
    normal = {re.sub(r"[-_.]+", "-", name).lower() for name in names}
    runtime = {re.split(r"[<>=!~;\[ ]", req)[0].lower() for req in requires if "extra ==" not in req}
    extras = {re.split(r"[<>=!~;\[ ]", req)[0].lower() for req in requires if "extra ==" in req}
    assert {"flask-asyncws", *runtime} <= normal
    assert {"pytest", "playwright"} <= extras
    assert not normal & extras, f"make run installed what only an extra needs: {sorted(normal & extras)}"
    # Nothing was installed into the system Python, globally or for the user.
    assert site_packages(python, env) == before

    # The install is current: running again installs nothing...
    assert not [line for line in dry_run(clone, env, "run") if " -m pip " in line or " -m venv " in line]
    # ...until pyproject.toml changes.
    pyproject = clone / "pyproject.toml"
    then = pyproject.stat()
    later = time.time() + 10
    os.utime(pyproject, (later, later))
    assert any(
        line.startswith(".venv/bin/python -m pip ") and line.endswith(" install -e .")
        for line in dry_run(clone, env, "run")
    )
    # `make test` installs the test extras into the same virtualenv and runs pytest there.
    test_commands = dry_run(clone, env, "test")
    os.utime(pyproject, ns=(then.st_atime_ns, then.st_mtime_ns))
    assert any(line.startswith(".venv/bin/python -m pip ") and '-e ".[test' in line for line in test_commands)
    assert ".venv/bin/python -m pytest" in test_commands

    # An active virtualenv is used as it is.
    active = tmp_path / "active"
    subprocess.run([python, "-m", "venv", "--without-pip", active], env=env, check=True, timeout=60)
    commands = dry_run(clone, {**env, "VIRTUAL_ENV": str(active)}, "test")
    assert f"{active}/bin/python -m pytest" in commands
    assert not [line for line in commands if " -m venv " in line or line.startswith(".venv/")]

    # The CI script's node-ID path runs pytest with the virtualenv's interpreter
    # (here the test extras are taken as installed: pytest is missing, and says so).
    # The system packages it installs when missing are the suite's own needs, in
    # place already: this test does not install them.
    subprocess.run(["make", "-t", "install"], cwd=clone, env=env, check=True, capture_output=True, timeout=30)
    no_apt = tmp_path / "no-apt"
    no_apt.mkdir()
    for name in ("apt-get", "sudo"):
        (no_apt / name).write_text(f'#!/bin/sh\necho "{name} $*: the suite needs these packages" >&2\nexit 1\n')
        (no_apt / name).chmod(0o755)
    ci = subprocess.run(
        ["bash", ".ci/run", "tests/unit/test_units.py"],
        cwd=clone,
        env={**env, "PATH": f"{no_apt}:{env['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ci.returncode != 0
    assert f"{venv}/bin/python: No module named pytest" in ci.stderr, ci.stdout + ci.stderr
