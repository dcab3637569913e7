"""A suite run without one of the extras it needs says which extra, fails, and goes on; one with a Python that
lacks what every test needs stops at once, saying how to get it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def without(tmp_path: Path, package: str) -> dict[str, str]:
    """An environment where ``package`` cannot be imported: a stand-in ahead of it on the import path."""
    absent = tmp_path / package
    absent.mkdir()
    missing = f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n"
    (absent / "__init__.py").write_text(missing)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_a_test_missing_an_extra_fails_naming_it_and_the_rest_runs(tmp_path: Path) -> None:
    env = without(tmp_path, "redis")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/e2e/test_groups_wire.py::test_nothing_read_from_redis_is_unpickled",
            "tests/unit/test_websocket_state.py",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout
    named = "redis cannot be imported (No module named 'redis'); the 'redis' extra installs what it needs"
    assert named in result.stdout, result.stdout
    summary = result.stdout.splitlines()[-1]
    # The file collects; its test fails, naming the extra; the other file runs.
    assert "1 failed" in summary and " passed" in summary and "error" not in summary, result.stdout


def test_without_the_metrics_extra_the_metric_tests_collect_and_the_module_says_what_to_install(
    tmp_path: Path,
) -> None:
    env = without(tmp_path, "prometheus_client")
    imported = subprocess.run(
        [sys.executable, "-c", "import flask_asyncws.metrics"], env=env, capture_output=True, text=True, timeout=60
    )
    assert imported.returncode != 0
    assert "ImportError: flask_asyncws.metrics needs prometheus-client" in imported.stderr, imported.stderr
    assert 'pip install "flask-asyncws[metrics]"' in imported.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/unit/test_metrics_setup.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    named = "flask_asyncws.metrics cannot be imported (flask_asyncws.metrics needs prometheus-client"
    assert named in result.stdout, result.stdout
    summary = result.stdout.splitlines()[-1]
    assert "failed" in summary and "error" not in summary, result.stdout


def pytest_alone(tmp_path: Path) -> Path:
    """A Python with pytest and what pytest needs, and none of the suite's packages: a virtualenv whose
    site-packages links to those distributions of this Python."""
    venv.create(tmp_path / "venv", with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([python, "-c", purelib], capture_output=True, text=True, check=True).stdout.strip())
    wanted, linked = ["pytest"], set()
    while wanted:
        dist = importlib.metadata.distribution(wanted.pop())
        if dist.metadata["Name"] in linked:
            continue
        linked.add(dist.metadata["Name"])
        for top in {path.parts[0] for path in dist.files or ()} - {"..", "__pycache__"}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))
        for text in dist.requires or ():
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return python


def test_a_python_without_what_the_tests_need_stops_at_once_saying_what_to_do(tmp_path: Path) -> None:
    python = pytest_alone(tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/unit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert f"This Python ({python}) lacks what the tests need: flask>=" in output, output
    assert "`make test` installs the package and its test extras" in output
    assert "error" not in result.stdout.lower(), output  # not a collection error per file
