"""What the suite needs installed before any test can be collected.

pyproject.toml declares it: the package's dependencies and its ``test`` extra.
Run with a Python that lacks them (``pytest`` from another environment, say),
every test file would fail to import on its own; the suite stops instead with
one message saying how to get them. The other extras (``redis``, ``metrics``,
...) are checked by the tests that need them (:mod:`support.extras`).
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself needs tomli there
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared(extra: str = "test") -> list[Requirement]:
    """The package's dependencies and those of ``extra``, for this Python."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"][extra]]]
    return [requirement for requirement in found if requirement.marker is None or requirement.marker.evaluate()]


def unmet(requirements: list[Requirement]) -> list[str]:
    """Each requirement not installed, or installed at a version it excludes, with the version found."""
    missing = []
    for requirement in requirements:
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} ({version} is installed)")
    return missing


def problem() -> str | None:
    """What to tell whoever runs the suite with a Python that cannot run it; None when it can."""
    missing = unmet(declared())
    if not missing:
        return None
    return (
        f"This Python ({sys.executable}) lacks what the tests need: {', '.join(missing)}.\n"
        "`make test` installs the package and its test extras into a virtualenv (the active one, else .venv) and"
        " runs the suite there; `$(make -s venv) -m pytest` then runs pytest with that virtualenv's Python."
        ' Or install them into this one: pip install -e ".[test,bench,browser,metrics,redis]".'
    )
