"""The chat example in a real headless Chromium, driven by Playwright.

Two users log in through the form, join a room and see each other's messages;
a page without a session is refused before the websocket opens. Locally the
test is skipped when Chromium is not installed; in CI (``CI`` set) that fails.
"""

from __future__ import annotations

import os
import typing as t

import pytest
from support.servers import LiveServer

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

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM} (apt-get install chromium); CI runs this test.",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def chat() -> t.Iterator[LiveServer]:
    from examples.chat.app import app

    with LiveServer(app.asgi_app) as srv:
        yield srv


def join(browser: Browser, base: str, name: str, room: str) -> Page:
    page = browser.new_context(base_url=base).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto("/")
    expect(page).to_have_url(f"{base}/login")
    page.fill("input[name=name]", name)
    page.click("text=Log in")
    expect(page.locator("b")).to_have_text(name)
    page.fill("#room", room)
    page.click("text=Join")
    expect(page.locator("#status")).to_have_text(f"in {room}")
    return page


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_two_users_chat(browser: Browser, chat: LiveServer) -> None:
    alice = join(browser, chat.http_url, "alice", "lobby")
    bob = join(browser, chat.http_url, "bob", "lobby")
    expect(alice.locator("#log li").last).to_have_text("bob joined lobby")

    say(alice, "hello from alice")
    expect(bob.locator("#log li").last).to_have_text("alice: hello from alice")
    say(bob, "hi alice")
    expect(alice.locator("#log li").last).to_have_text("bob: hi alice")
    expect(alice.locator("#log li")).to_have_text(
        ["alice joined lobby", "bob joined lobby", "alice: hello from alice", "bob: hi alice"]
    )

    bob.context.close()
    expect(alice.locator("#log li").last).to_have_text("bob left lobby")
    alice.context.close()


def test_anonymous_page_is_refused(browser: Browser, chat: LiveServer) -> None:
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
