"""Users' type checkers see the typed API: mypy --strict and pyright on tests/type_check.

The ``typing_*.py`` files there are user-style code that must check clean; the
``fail_*.py`` files mark with ``# error`` each line a checker must report, and
no other line may be reported. (pytest collects only ``test_*.py``, so none of
them is collected as tests.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPE_CHECK = ROOT / "tests" / "type_check"
CLEAN = sorted(TYPE_CHECK.glob("typing_*.py"))
MUST_FAIL = sorted(TYPE_CHECK.glob("fail_*.py"))
MARK = re.compile(r"#\s*error\s*$")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    return run("mypy", "--strict", "--no-error-summary", *(str(f.relative_to(ROOT)) for f in files))


def pyright(*files: Path) -> subprocess.CompletedProcess[str]:
    return run("pyright", "--pythonpath", sys.executable, "--outputjson", *(str(f) for f in files))


def marked_lines(path: Path) -> set[int]:
    return {n for n, line in enumerate(path.read_text().splitlines(), 1) if MARK.search(line)}


def test_the_folder_has_both_kinds() -> None:
    assert CLEAN and MUST_FAIL, "tests/type_check lost its files"
    for path in MUST_FAIL:
        assert marked_lines(path), f"{path.name} marks no line with '# error'"


def test_mypy_strict_is_clean() -> None:
    result = mypy(*CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright_is_clean() -> None:
    result = pyright(*CLEAN)
    report = json.loads(result.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert result.returncode == 0 and not errors, json.dumps(errors, indent=1)


@pytest.mark.parametrize("path", MUST_FAIL, ids=lambda p: p.name)
def test_mypy_reports_each_marked_line(path: Path) -> None:
    result = mypy(path)
    assert result.returncode == 1, result.stdout + result.stderr
    name = str(path.relative_to(ROOT))
    reported = set()
    for line in result.stdout.splitlines():
        match = re.match(rf"{re.escape(name)}:(\d+): error:", line)
        if match:
            reported.add(int(match.group(1)))
        else:
            assert ": note:" in line or not line.strip(), f"unexpected mypy output: {line}"
    assert reported == marked_lines(path), result.stdout


@pytest.mark.parametrize("path", MUST_FAIL, ids=lambda p: p.name)
def test_pyright_reports_each_marked_line(path: Path) -> None:
    result = pyright(path)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    reported = set()
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic["severity"] == "error":
            assert Path(diagnostic["file"]) == path, diagnostic
            reported.add(diagnostic["range"]["start"]["line"] + 1)
    assert reported == marked_lines(path), json.dumps(report["generalDiagnostics"], indent=1)
