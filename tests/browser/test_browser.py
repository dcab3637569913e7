"""The chat example in a real headless Chromium, driven by Playwright.

Two pages on two different worker processes: two hypercorn processes on two
ports, sharing one real redis-server, as two workers (or two hosts) behind a
load balancer would. Each page shows the process id of the worker its
websocket landed on, and the test checks they differ. A message, the member
list and an HTTP announcement cross between them; a page that closes leaves
the other's member list; a server that dies shows its page reconnecting, and a
server that comes back has it online again. Screenshots of each step are
saved in the test's temporary directory.

Locally the test is skipped when Chromium is not installed; in CI (``CI``
set) that fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import typing as t
import urllib.error
import urllib.request

import pytest
from support.extras import playwright_api
from support.redis_server import RedisServer
from support.servers import ROOT, LiveServer, ServerProcess, free_port

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def expect(target: t.Any) -> t.Any:
    """Playwright's ``expect``, imported when a test first asserts."""
    return playwright_api.expect(target)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000
#: Long enough for a page's reconnection backoff (1, 2, 4, 8 s) to come round to a restarted server.
RECONNECT_MS = 30_000
CHAT = "examples.chat.app:app.asgi_app"


def serves_login(server: ServerProcess) -> bool:
    try:
        with urllib.request.urlopen(server.http_url + "/login", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class ChatServer(ServerProcess):
    """The chat under ``hypercorn`` (one worker process) on a port of its own, with Redis as its broker.

    Killed and started again, it serves on the same port: its pages reconnect to it.
    """

    ready = staticmethod(serves_login)

    def __init__(self, broker_url: str) -> None:
        port = free_port()
        argv = [
            sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--graceful-timeout", "2", CHAT,
        ]  # fmt: skip
        env = {"ASYNCWS_BROKER_URL": broker_url}
        # A process group of its own: a kill ends hypercorn's worker process too.
        super().__init__(argv, cwd=ROOT, env=env, new_session=True, name=f"chat:{port}")
        self.port = port


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: apt-get install chromium (`make test` installs it when missing)."
        )
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def redis() -> t.Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def open_chat(browser: Browser, base: str, name: str, room: str = "lobby") -> Page:
    """A new browser (its own cookies) logged in as ``name``, in ``room`` and online."""
    page = browser.new_context(base_url=base, viewport={"width": 1100, "height": 640}).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"/?room={room}")
    expect(page).to_have_url(f"{base}/login")
    page.fill("input[name=name]", name)
    page.click("text=Log in")
    if room != "lobby":
        page.goto(f"/?room={room}")
    expect(page.locator("#me")).to_have_text(name)
    expect(page.locator("#status")).to_have_text("Online")
    return page


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def members(page: Page) -> t.Any:
    return expect(page.locator("#members .name"))


def worker_pid(page: Page) -> int:
    expect(page.locator("#worker")).to_have_text(re.compile(r"Served by worker process \d+"))
    return int(page.locator("#worker").inner_text().rpartition(" ")[2])


def post_json(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def get_json(url: str) -> t.Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_chat_across_two_workers(browser: Browser, redis: RedisServer, tmp_path: pathlib.Path) -> None:
    with ChatServer(redis.url) as one, ChatServer(redis.url) as two:
        alice = open_chat(browser, one.http_url, "alice")
        bob = open_chat(browser, two.http_url, "bob")
        alice_worker, bob_worker = worker_pid(alice), worker_pid(bob)
        assert alice_worker != bob_worker

        # Each sees the other in the member list, and the other's messages.
        members(alice).to_have_text(["alice", "bob"])
        members(bob).to_have_text(["alice", "bob"])
        expect(alice.locator("#log .notice .text").last).to_have_text("bob joined")
        say(alice, "hello from alice")
        expect(bob.locator("#log .message .who").last).to_have_text("alice")
        expect(bob.locator("#log .message .text").last).to_have_text("hello from alice")
        say(bob, "hi alice, from the other worker")
        expect(alice.locator("#log .message .text").last).to_have_text("hi alice, from the other worker")
        expect(alice.locator("#log .message .who")).to_have_text(["alice", "bob"])
        expect(alice.locator("#log .message time").first).to_have_text(re.compile(r"\d{1,2}:\d{2}.*"))

        # User text is text, never markup: not in the log, not in the member list.
        mallory = open_chat(browser, two.http_url, "<b>mallory</b>")
        markup = "<img src=x onerror=\"document.title='owned'\"> <i>hi</i>"
        say(mallory, markup)
        expect(alice.locator("#log .message .text").last).to_have_text(markup)
        members(alice).to_have_text(["<b>mallory</b>", "alice", "bob"])
        assert alice.locator("#log img, #log i, #log b, #members b").count() == 0
        assert "owned" not in alice.title()
        mallory.context.close()
        members(alice).to_have_text(["alice", "bob"])

        # A second tab counts twice.
        alice_again = alice.context.new_page()
        alice_again.goto(f"{two.http_url}/")
        expect(alice_again.locator("#status")).to_have_text("Online")
        expect(bob.locator('#members [data-user="alice"] .note')).to_have_text("2 tabs")
        lobby = get_json(one.http_url + "/rooms/lobby")
        assert lobby == {"room": "lobby", "count": 3, "presence": {"alice": 2, "bob": 1}}
        alice_again.close()
        expect(bob.locator('#members [data-user="alice"] .note')).to_have_count(0)

        # An announcement posted to either server reaches both pages.
        assert post_json(two.http_url + "/rooms/lobby/announce", {"text": "Maintenance at 18:00"}) == 204
        for page in (alice, bob):
            expect(page.locator("#log .announcement .text").last).to_have_text("Maintenance at 18:00")
        alice.screenshot(path=tmp_path / "alice.png")
        bob.screenshot(path=tmp_path / "bob.png")

        # Alice closes her page: she leaves bob's member list.
        alice.context.close()
        members(bob).to_have_text(["bob"])
        expect(bob.locator("#log .notice .text").last).to_have_text("alice left")
        assert get_json(two.http_url + "/rooms/lobby") == {"room": "lobby", "count": 1, "presence": {"bob": 1}}

        # Bob's server stops: his page says it is reconnecting, and counts down; back, it is online again.
        # It is killed, the same on every Python: plain hypercorn on 3.12.1+ leaves open websockets
        # open on SIGTERM (hypercorn#308, docs/deployment.md).
        carol = open_chat(browser, one.http_url, "carol")
        members(carol).to_have_text(["bob", "carol"])
        two.kill()
        expect(bob.locator("#status")).to_have_text(re.compile(r"Reconnecting in \d+ s"))
        expect(bob.locator("#send")).to_be_disabled()
        expect(bob.locator("#retry")).to_be_visible()
        expect(bob.locator("#log .notice .text").last).to_have_text("Connection lost.")
        bob.screenshot(path=tmp_path / "reconnecting.png")
        two.start()
        expect(bob.locator("#status")).to_have_text("Online", timeout=RECONNECT_MS)
        expect(bob.locator("#retry")).to_be_hidden()
        expect(carol.locator("#log .notice .text").last).to_have_text("bob joined")
        members(carol).to_have_text(["bob", "carol"])
        say(bob, "back")
        expect(carol.locator("#log .message .text").last).to_have_text("back")
        carol.screenshot(path=tmp_path / "carol.png")
        bob.context.close()
        carol.context.close()


def test_anonymous_page_is_refused(browser: Browser) -> None:
    from examples.chat.app import app

    with LiveServer(app.asgi_app) as chat:
        page = browser.new_context(base_url=chat.http_url).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto("/login")  # same origin as the chat, no session cookie
        outcome = page.evaluate(
            """() => new Promise((resolve) => {
                const events = [];
                const socket = new WebSocket(`ws://${location.host}/ws/lobby`);
                socket.onopen = () => events.push("open");
                socket.onerror = () => events.push("error");
                socket.onclose = (event) => resolve({events, code: event.code});
            })"""
        )
        assert outcome == {"events": ["error"], "code": 1006}
        page.context.close()
