"""The chat page in a real browser (Debian's Chromium, headless, driven by Playwright): streaming,
stop, a second turn that carries the first, Chinese typed through an input method, the interface
in Chinese, a phone-sized screen, and model output full of markup that shows as text and runs
nothing."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from serving import API_KEY, XSS, metric

pytestmark = pytest.mark.xdist_group("serve")

CHROMIUM = "/usr/bin/chromium"
# what the machine's closed network needs: no background connections, no sandbox as root
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    _install_chromium()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def _install_chromium() -> None:
    """A fresh Debian machine gets the browser the way the corpora arrive: from apt (pip cannot)."""
    if Path(CHROMIUM).exists() or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:  # stale package lists
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)


def open_page(browser, server, model, **context):
    page = browser.new_context(**context).new_page()
    page.goto(server.url + "/")
    page.click("#settings-toggle")
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Tab")  # change event: the key is stored and the models load with it
    page.locator("#model option").nth(1).wait_for(state="attached")
    page.select_option("#model", model)
    return page


def wait_reply_done(page, timeout=60_000):
    page.locator("#send").wait_for(state="visible", timeout=timeout)


def test_stream_stop_second_turn_chinese_ime_and_language(browser, server):
    from playwright.sync_api import expect

    page = open_page(browser, server, "talker")
    requests = []
    page.on("request", lambda r: r.url.endswith("/v1/chat/completions") and requests.append(r.post_data_json))
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "1000")

    # turn 1: a long greedy reply streams in; Stop ends it and frees the server's row
    page.fill("#input", "hi")
    page.press("#input", "Enter")
    reply = page.locator(".msg.assistant .text").first
    expect(reply).not_to_have_text("", timeout=60_000)
    page.click("#stop")
    expect(page.locator(".msg.assistant.stopped")).to_have_count(1)
    wait_reply_done(page)
    partial = reply.text_content()
    assert len(partial) > 0
    deadline = time.monotonic() + 30
    while metric(server.url, "llmkit_batch_sequences", model="talker") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server.url, "llmkit_batch_sequences", model="talker") == 0

    # turn 2, typed in Chinese through an input method: the Enter that picks a candidate does not send
    page.fill("#max-tokens", "12")
    page.focus("#input")
    page.dispatch_event("#input", "compositionstart")
    page.keyboard.insert_text("你好，世界")
    page.dispatch_event("#input", "keydown", {"key": "Enter", "code": "Enter", "keyCode": 229, "isComposing": True})
    page.dispatch_event("#input", "compositionend")
    expect(page.locator(".msg.user")).to_have_count(1)  # nothing was sent
    page.press("#input", "Enter")
    expect(page.locator(".msg.user")).to_have_count(2)
    wait_reply_done(page)
    expect(page.locator(".msg.user .text").nth(1)).to_have_text("你好，世界")
    assert requests[-1]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "你好，世界"},
    ]
    assert requests[-1]["stream"] is True and requests[-1]["max_tokens"] == 12 and requests[-1]["temperature"] == 0
    expect(page.locator(".msg.assistant .text").nth(1)).not_to_have_text("")

    # the interface in Chinese
    page.click("#lang")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".msg.user .who").first).to_have_text("你")


def test_markup_in_model_output_shows_as_text_and_runs_nothing(browser, server):
    # the page's Content-Security-Policy is bypassed here, so that only the page's own escaping
    # stands between the model's markup and the DOM
    page = open_page(browser, server, "xss", bypass_csp=True)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.fill("#temperature", "0")
    page.fill("#input", "<b>hi</b>")
    page.press("#input", "Enter")
    wait_reply_done(page)
    assert page.locator(".msg.assistant .text").first.text_content() == XSS
    assert page.locator(".msg.user .text").first.text_content() == "<b>hi</b>"
    assert page.locator("#messages script, #messages img, #messages b").count() == 0
    assert page.evaluate("() => window.__pwned") is None and not dialogs


def test_page_fits_a_phone_screen(browser, server):
    page = open_page(browser, server, "talker", viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True)
    page.fill("#max-tokens", "40")
    page.click("#settings-toggle")  # closed again: the chat gets the screen
    page.fill("#input", "hello")
    page.press("#input", "Enter")
    wait_reply_done(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for sel in ("#input", "#send", "#model"):
        box = page.locator(sel).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844
