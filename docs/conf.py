"""Sphinx configuration: ``make docs`` builds the site into ``docs/_build/html``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

ROOT = Path(__file__).resolve().parent.parent
# Document the package in this tree, whatever copy is installed elsewhere.
sys.path.insert(0, str(ROOT))

import flask_asyncws  # noqa: E402

project = "flask-asyncws"
author = "flask-asyncws contributors"
copyright = author
release = flask_asyncws.__version__
version = release

REPOSITORY = "https://github.com/flask-asyncws/flask-asyncws"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]

# The pages link to each other's sections (deployment.md#keepalive-pings).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# A name the package imports only for type checking, which autodoc cannot
# evaluate: shown with its module, so a reader can find it.
autodoc_type_aliases = {"TestResponse": "werkzeug.test.TestResponse"}
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = f"flask-asyncws {release}"


# The README and the examples' README link to files by their path in the
# repository, which is what GitHub shows. In this site the docs/ pages, the
# changelog and the examples are pages of their own; anything else is linked on
# GitHub.
_LOCAL_LINK = re.compile(r"\]\((?![a-z]+:|#)([^)\s]+)\)")


def _page_for(target: str, including_dir: Path) -> str:
    target, sep, fragment = target.partition("#")
    path = (ROOT / including_dir / target).resolve()
    if path == ROOT / "CHANGELOG.md":
        return "changelog.md"
    if path.is_relative_to(ROOT / "examples"):
        return "examples.md"
    if path.is_relative_to(ROOT / "docs") and path.suffix == ".md":
        return path.relative_to(ROOT / "docs").as_posix() + sep + fragment
    kind = "tree" if path.is_dir() else "blob"
    return f"{REPOSITORY}/{kind}/main/{path.relative_to(ROOT).as_posix()}{sep}{fragment}"


def _link_repository_paths(app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    including_dir = (ROOT / "docs" / relative_path).resolve().parent.relative_to(ROOT)
    if including_dir.parts[:1] == ("docs",):
        return  # a page of this site: its links are already right
    content[0] = _LOCAL_LINK.sub(lambda m: f"]({_page_for(m[1], including_dir)})", content[0])


# Made by the package, one per connection, never by an application: their
# constructors' arguments are not part of the API.
_NOT_CONSTRUCTED = {"flask_asyncws.Websocket", "flask_asyncws.testing.TestWebsocket", "flask_asyncws.compat.WebSocket"}


def _hide_constructor(
    app: Sphinx, what: str, name: str, obj: object, options: object, signature: str, return_annotation: str
) -> tuple[str, str | None] | None:
    if what == "class" and name in _NOT_CONSTRUCTED:
        return "", None
    return None


def _check_reference(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) about a public name the reference lacks."""
    documented = env.get_domain("py").objects  # type: ignore[attr-defined]
    for name in flask_asyncws.__all__:
        if f"flask_asyncws.{name}" not in documented:
            logging.getLogger(__name__).warning(
                "flask_asyncws.%s is in __all__ but not in the API reference (docs/api.rst)", name
            )


def setup(app: Sphinx) -> None:
    app.connect("include-read", _link_repository_paths)
    app.connect("autodoc-process-signature", _hide_constructor)
    app.connect("env-check-consistency", _check_reference)
