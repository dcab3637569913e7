"""Django Channels: a consumer that joins the group and forwards its messages (``channels_app:application``).

The channel layer is channels_redis's ``RedisPubSubChannelLayer`` on the Redis
named by ``FANOUT_REDIS_URL``. The publisher uses the same settings
(``channel_layer()``) and ``async_to_sync(layer.group_send)``.
"""

from __future__ import annotations

import os
import typing as t

import django
from django.conf import settings

from .common import GROUP

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="fanout-benchmark",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [os.environ.get("FANOUT_REDIS_URL", "redis://127.0.0.1:6379/0")]},
            }
        },
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Member(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event: dict[str, t.Any]) -> None:
        await self.send(text_data=event["text"])


async def hello(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
    """Any HTTP request: 200, so the harness sees the worker is up."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"fan-out benchmark"})


application = ProtocolTypeRouter({"http": hello, "websocket": URLRouter([path("ws", Member.as_asgi())])})


def channel_layer() -> t.Any:
    return get_channel_layer()
