"""The ASGI 3 types the package speaks in, kept apart so any module can name them."""

from __future__ import annotations

import typing as t

Scope = dict[str, t.Any]
Message = dict[str, t.Any]
ASGIReceive = t.Callable[[], t.Awaitable[Message]]
ASGISend = t.Callable[[Message], t.Awaitable[None]]
