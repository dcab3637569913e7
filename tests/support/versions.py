"""What each supported Flask version does, where the tests' expectations differ.

The package itself learns which Flask it runs on in ``flask_asyncws._flask_version``;
this module states, for the tests, the behaviour of Flask (not of this package)
that changed between 3.1 and 3.2, so a test asserts what the installed Flask does.
"""

from __future__ import annotations

import importlib.metadata
import re

import flask.ctx

_match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", importlib.metadata.version("flask"))
assert _match is not None
#: The installed Flask's (major, minor, micro) version; 3.2.0.dev0 is (3, 2, 0).
FLASK: tuple[int, int, int] = (int(_match[1]), int(_match[2]), int(_match[3] or 0))

#: ``flask.redirect()`` answers 302 Found up to Flask 3.1 and 303 See Other from 3.2
#: (the code's default changed; a browser follows either with a GET).
REDIRECT_STATUS = 303 if FLASK >= (3, 2) else 302

#: The class of a request context: ``RequestContext`` up to Flask 3.1; from 3.2 the
#: request context is merged into ``AppContext`` (its ``RequestContext`` name is a
#: deprecated alias, not looked up here).
REQUEST_CONTEXT: type = vars(flask.ctx).get("RequestContext") or flask.ctx.AppContext

#: How often Flask runs a streamed response's ``teardown_request`` functions when the
#: view's generator uses ``stream_with_context`` (the same under any WSGI server):
#: - Flask 3.1.0 and 3.1.1: once, when the generator closes (it pushes the context
#:   again while the request's push is still on, so the pop ending the request is not
#:   the last one);
#: - Flask 3.1.2 and later 3.1: twice, when the request ends and again when the
#:   generator closes (it pushes the context only once it runs, after the request's
#:   pop has torn it down);
#: - Flask 3.2: once (its context counts its pushes and tears down at the last pop).
STREAMED_TEARDOWNS = 2 if (3, 1, 2) <= FLASK < (3, 2) else 1
