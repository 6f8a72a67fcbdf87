"""The console's browser tests: one daemon (in a thread, with a scripted LLM upstream) and
one headless Chromium for the whole session, driven with Selenium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from harkd.testing import DaemonHandle, run_daemon
from harkd.testing_upstream import ScriptedUpstream

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FILES = {
    "echo": "description: Says hi\ntrigger: {http: {}}\nsteps:\n"
            "  - template: 'hi {{ input.name }}'\n",
    "chain": "description: Several steps and an LLM call\ntrigger: {http: {}}\nsteps:\n"
             "  - set: {who: '{{ input.name }}'}\n"
             "  - template: 'Say hello to {{ vars.who }}'\n    as: prompt\n"
             "  - log: 'asking about {{ vars.who }}'\n"
             "  - llm: {model: fast, prompt: '{{ vars.prompt }}'}\n",
    "chat": "trigger: {websocket: {}}\nsteps:\n"
            "  - llm: {model: slow, prompt: '{{ input }}', stream: true}\n",
    "slowjob": "trigger: {http: {response: async}}\nsteps:\n"
               "  - llm: {model: slower, prompt: '{{ input }}', stream: true}\n",
    "broken": "trigger: {http: {}}\nsteps:\n  - llm: {model: broken, prompt: hi}\n",
    "bad": "trigger: {http: {}}\nsteps:\n  - template: fine\n  - templat: x\n",
    "talk": "trigger: {websocket: {mode: audio, audio: {vad: {silence: 400ms}}}}\n"
            "steps:\n  - stt: {}\n  - template: 'you said {{ input }}'\n"
            "  - tts: {engine: espeak}\n  - play: {}\n",
    "nested": "trigger: {http: {}}\nsteps:\n"
              "  - map: {over: '{{ input.items }}', concurrency: 1,\n"
              "          steps: [{template: '{{ input | upper }}'}]}\n"
              "  - parallel: {a: [{template: x}], b: [{template: y}, {log: z}]}\n",
}


def config(upstream: ScriptedUpstream) -> str:
    return (f"models:\n"
            f"  fast: [{{model: openai/m1, api_base: '{upstream.v1}'}}]\n"
            f"  slow: [{{model: openai/slow, api_base: '{upstream.v1}'}}]\n"
            f"  slower: [{{model: openai/slower, api_base: '{upstream.v1}'}}]\n"
            f"  broken: [{{model: openai/dead, api_base: 'http://127.0.0.1:9/v1'}}]\n"
            f"router: {{retries: 0, failures: 1, cooldown: 10m}}\n")


class Live:
    """A daemon (and a scripted upstream) on an event loop in a thread, so that the sync
    Selenium tests can drive a browser against it and still reach its internals."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-daemon",
                                       daemon=True)
        self.stack = contextlib.AsyncExitStack()
        self.d: DaemonHandle
        self.upstream: ScriptedUpstream

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()

        async def enter() -> None:
            self.upstream = await self.stack.enter_async_context(ScriptedUpstream())
            from harkd.testing_upstream import Reply

            self.upstream.default("slow", Reply(text="one two three four five six",
                                                chunk_delay=0.15))
            # long enough that a page opened at once sees the run still going
            self.upstream.default("slower", Reply(text="a b c d e f", chunk_delay=0.5))
            self.d = await self.stack.enter_async_context(
                run_daemon(self.root, FILES, config=config(self.upstream)))

        self.call(enter())

    def stop(self) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def base(self) -> str:
        return self.d.base

    def post(self, path: str, body: Any) -> tuple[int, str, str]:
        """POST JSON; (status, run id, body text). A run that answered is in the run log
        when this returns (its writer batches every 50 ms)."""
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out = r.status, r.headers.get("X-Harkd-Run-Id", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            out = e.code, e.headers.get("X-Harkd-Run-Id", ""), e.read().decode()
        if self.d.daemon.runlog is not None:
            self.d.daemon.runlog.flush_sync()
        return out

    def write(self, name: str, text: str) -> None:
        self.call(self.d.write(name, text))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The daemon of the browser tests; harkd's log configuration (which feeds the log
    tail) holds while they run and the previous one comes back after."""
    from harkd import logs

    # feeds the console's log tail
    with logs.configured("info", "json", stream=io.StringIO()):
        server = Live(tmp_path_factory.mktemp("console"))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the session, from Debian's chromium and chromium-driver
    (given by path, so Selenium Manager never looks for or downloads a driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            pytest.fail(f"{exe} is missing: scripts/setup installs chromium and "
                        "chromium-driver")
    # What the fake microphone says (once) when the page asks for it: push-to-talk.
    speech = tmp_path_factory.mktemp("speech") / "lights.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(speech),
                    "Turn on the kitchen lights."], check=True, timeout=30)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech}%noloop",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Not the voice tests' PulseAudio (its null sink runs at 16 kHz mono): when that ran
    # first, Chromium's audio went through it and the fake microphone came out garbled.
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, env=env))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser for one test: screenshots into the test's folder, and at the end a
    check that the browser's console shows no errors."""

    def __init__(self, driver: Any, base: str, folder: Path) -> None:
        self.driver = driver
        self.base = base
        self.folder = folder

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def shot(self, name: str) -> Path:
        """A screenshot of the whole page, not only the window (Chrome DevTools)."""
        path = self.folder / f"{name}.png"
        width, height = self.driver.execute_script(
            "const e = document.documentElement; return [e.clientWidth, e.scrollHeight];")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        keep = os.environ.get("HARKD_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    def wait(self, predicate: Any, timeout: float = 15.0) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            lambda d: predicate())

    # Live regions are swapped while a test reads them, so reads go through one script
    # call each (a snapshot) rather than element handles that may go stale.

    def text(self, css: str) -> str:
        """The rendered text of the first element matching ``css``."""
        text = self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e && e.innerText;", css)
        if text is None:
            raise AssertionError(f"nothing matches {css!r} on {self.driver.current_url}")
        return str(text)

    def texts(self, css: str) -> list[str]:
        return list(self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText);",
            css))

    def attrs(self, css: str, name: str) -> list[str | None]:
        return list(self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map((e) => e.getAttribute(arguments[1]));", css, name))

    def count(self, css: str) -> int:
        return int(self.driver.execute_script(
            "return document.querySelectorAll(arguments[0]).length;", css))

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def page(browser: Any, live: Live, tmp_path: Path) -> Iterator[Page]:
    browser.get_log("browser")  # drop what earlier tests left
    p = Page(browser, live.base, tmp_path)
    yield p
    browser.get("about:blank")  # close the page's event streams
    assert p.errors() == []
