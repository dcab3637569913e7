"""The wheel a user installs: the package and nothing else, with full metadata.

The wheel is built by pip from a copy of the source tree, as from a fresh
clone, so the tests, benchmarks and examples beside the package are there to be
left out.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import flask_asyncws

ROOT = Path(__file__).resolve().parents[2]

# Local state a developer's tree may hold; a fresh clone has none of it.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "_build", "results", ".*_cache"
)


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_IN_A_CLONE)
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def test_wheel_holds_the_package_and_its_metadata(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    version = flask_asyncws.__version__
    dist_info = f"flask_asyncws-{version}.dist-info"
    assert wheel.name == f"flask_asyncws-{version}-py3-none-any.whl"

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_string(archive.read(f"{dist_info}/METADATA").decode())
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()

    package = {name for name in names if not name.startswith(f"{dist_info}/")}
    expected = {f"flask_asyncws/{path.name}" for path in (ROOT / "flask_asyncws").glob("*.py")}
    assert package == expected | {"flask_asyncws/py.typed"}

    assert metadata["Name"] == "flask-asyncws"
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert license_text == (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n\nCopyright (c) flask-asyncws contributors\n")
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: Flask" in classifiers
    assert "Typing :: Typed" in classifiers
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert set(urls) == {"Documentation", "Changelog", "Source", "Issue Tracker"}
    assert all(url.startswith("https://") for url in urls.values())
    runtime = [req for req in metadata.get_all("Requires-Dist") if "extra ==" not in req]
    assert sorted(req.split(">")[0] for req in runtime) == ["flask", "greenlet", "hypercorn", "werkzeug"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text().strip()
