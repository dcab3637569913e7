"""Mistakes type checkers must report: each line marked ``# error`` has one.

tests/test_type_check.py checks that mypy and pyright report an error on each
marked line and on no other.
"""

from __future__ import annotations

from flask import Flask, Response

from flask_asyncws import AsyncWS, Blueprint, websocket

app = Flask(__name__)
asyncws = AsyncWS(app)
bp = Blueprint("bp", __name__)


def before_with_an_argument(user: str) -> None:
    pass


asyncws.before_websocket(before_with_an_argument)  # error


def teardown_without_the_exception() -> None:
    pass


asyncws.teardown_websocket(teardown_without_the_exception)  # error
bp.teardown_websocket(teardown_without_the_exception)  # error


def after_taking_two(response: Response | None, extra: int) -> Response | None:
    return response


asyncws.after_websocket(after_taking_two)  # error


def serving_with_an_argument(app: Flask) -> None:
    pass


asyncws.before_serving(serving_with_an_argument)  # error


def handler_returning_a_number() -> int:
    return 1


asyncws.websocket("/ws")(handler_returning_a_number)  # error


def sent() -> None:
    websocket.send("x")


# The short form the app gets at run time is not visible to type checkers.
app.websocket("/short")(sent)  # error
app.test_client().websocket("/short")  # error


def joins_a_number() -> None:
    websocket.join(42)  # error


asyncws.publish(b"room", "x")  # error
