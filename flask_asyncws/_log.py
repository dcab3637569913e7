"""The ``flask_asyncws`` logger, shown the way Flask shows its own records.

The library logs on one logger, ``flask_asyncws``. Logging the app sets up
(``logging.basicConfig``, ``dictConfig``, a handler on that logger) takes its
records like any other library's. When nothing set up would show a record,
Flask's ``default_handler`` does, as it does for ``app.logger``: a warning
then carries its time, level and module instead of Python's bare last-resort
line.
"""

from __future__ import annotations

import logging
import threading
import typing as t

from flask.logging import default_handler

NAME = "flask_asyncws"


class _FlaskDefault(logging.Handler):
    """Shows a record through Flask's ``default_handler`` when no other handler would.

    Decided per record rather than once: logging configured after the app is
    created still takes over, without lines shown twice.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if not _shown_elsewhere(record):
            default_handler.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        default_handler.emit(record)


def _shown_elsewhere(record: logging.LogRecord) -> bool:
    """Whether another handler on the record's way up handles its level."""
    current: logging.Logger | None = logging.getLogger(record.name)
    while current is not None:
        for handler in current.handlers:
            if handler.level <= record.levelno and not isinstance(handler, _FlaskDefault):
                return True
        if not current.propagate:
            break
        current = current.parent
    return False


class _Logger:
    """``logging.getLogger("flask_asyncws")``, made at its first use rather than at import.

    As Werkzeug does for its logger: ``logging.config.dictConfig()`` disables
    the loggers that exist when it runs unless told otherwise, so one made
    when the app imports flask_asyncws would be silenced by a ``dictConfig``
    written after the imports, as Flask's documentation shows it.
    """

    _logger: logging.Logger | None = None
    _lock = threading.Lock()

    def __getattr__(self, name: str) -> t.Any:
        logger = self._logger
        if logger is None:
            with self._lock:
                logger = self._logger
                if logger is None:
                    logger = logging.getLogger(NAME)
                    logger.addHandler(_FlaskDefault())
                    _Logger._logger = logger
        return getattr(logger, name)


#: What the library logs on; use it like a :class:`logging.Logger`.
logger = t.cast(logging.Logger, _Logger())
