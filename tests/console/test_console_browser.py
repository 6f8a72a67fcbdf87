"""The console in a real browser (headless Chromium through Selenium) against a real
daemon: what a person sees on each page, live updates, try-it streaming, and no errors
in the browser's console (checked by the ``page`` fixture after each test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from harkd.testing import spawn_daemon

from .conftest import Live, Page


def test_pipelines_page_shows_states_and_the_offending_line(page: Page, live: Live) -> None:
    page.open("/")
    rows = {row.split("\t")[0].strip(): row for row in page.texts("table.list tbody tr")}
    assert "active" in rows["echo"] and "http /hooks/echo" in rows["echo"]
    assert "rejected" in rows["bad"]
    problem = page.text("section.problem")
    bad = str(live.d.path("bad"))
    assert f"{bad}:4:5" in problem  # file:line:column of `templat`
    hit = page.text("section.problem .excerpt .hit")
    assert "- templat: x" in hit and hit.strip().startswith("4")
    page.shot("pipelines")


def test_pipelines_page_updates_live_when_a_file_changes(page: Page, live: Live) -> None:
    page.open("/ui/pipelines")
    assert not page.count("#p-fresh")
    live.write("fresh", "trigger: {http: {}}\nsteps: [{template: new}]\n")
    page.wait(lambda: page.count("#p-fresh"))
    assert "active" in page.text("#p-fresh")
    live.write("fresh", "trigger: {http: {}}\nsteps: [{templat: new}]\n")  # a bad edit
    page.wait(lambda: "stale" in page.text("#p-fresh"))
    assert "Still serving version 1" in page.text("#live")
    page.shot("pipelines-live")
    live.call(live.d.remove("fresh"))
    page.wait(lambda: not page.count("#p-fresh"))


def test_runs_page_filters_and_a_run_shows_its_waterfall(page: Page, live: Live) -> None:
    status, run_id, body = live.post("/hooks/chain", {"name": "Ada"})
    assert status == 200 and body == "echo: Say hello to Ada"
    assert live.post("/hooks/broken", {})[0] == 502
    page.open("/ui/runs")
    assert page.count("table.runs tbody tr") >= 2
    Select(page.driver.find_element(By.NAME, "status")).select_by_visible_text("error")
    page.wait(lambda: "status=error" in page.driver.current_url)
    statuses = set(page.texts("table.runs tbody .badge"))
    assert statuses == {"error"}
    assert "broken" in page.text("table.runs tbody")
    page.shot("runs-filtered")

    page.open(f"/ui/runs/{run_id}")
    assert page.attrs("ol.waterfall > li", "data-path") == ["0", "1", "2", "3"]
    assert page.texts("ol.waterfall > li .kind") == ["set", "template", "log", "llm"]
    assert "as prompt" in page.texts("ol.waterfall > li")[1]
    steps = page.all("ol.waterfall > li")  # a run's page does not change: handles stay
    assert "Say hello to Ada" in page.text("#out + pre")
    llm = page.text("#llm + table")
    assert "openai/m1" in llm and "fast" in llm
    steps[3].find_element(By.TAG_NAME, "summary").send_keys(Keys.ENTER)  # keyboard opens it
    page.wait(lambda: "prompt_tokens" in steps[3].text)
    page.shot("run")


def test_waterfall_indents_nested_steps(page: Page, live: Live) -> None:
    status, run_id, _ = live.post("/hooks/nested", {"items": ["a", "b"]})
    assert status == 200
    page.open(f"/ui/runs/{run_id}")
    steps = page.all("ol.waterfall > li")
    paths = list(zip(page.attrs("ol.waterfall > li", "data-path"),
                     page.attrs("ol.waterfall > li", "data-depth"), strict=True))
    assert paths[:3] == [("0", "0"), ("0.map[0].0", "1"), ("0.map[1].0", "1")]
    assert ("1.parallel.b.1", "1") in paths and paths[3] == ("1", "0")
    indent = [s.find_element(By.CSS_SELECTOR, ".label").value_of_css_property("padding-left")
              for s in steps[:2]]
    assert indent[0] == "0px" and indent[1] != "0px"
    page.shot("run-nested")


def test_a_failed_run_and_the_router_page_show_the_error(page: Page, live: Live) -> None:
    _, run_id, _ = live.post("/hooks/broken", {})
    page.open(f"/ui/runs/{run_id}")
    assert "every deployment of model alias 'broken' failed" in page.text("[role=alert]")
    page.open("/ui/router")
    assert "openai/dead" in page.text("#a-broken + table")
    assert "cooling" in page.text("#a-broken + table")
    assert "openai/dead" in page.text("#open + ul")
    assert "openai/dead" in page.text("#recent-errors + table")
    assert "ok" in page.text("#a-fast + table")
    page.shot("router")


def test_try_it_streams_the_reply(page: Page, live: Live) -> None:
    page.open("/ui/pipelines/chat")
    page.driver.execute_script(
        "window.updates = 0; new MutationObserver(() => window.updates++)"
        ".observe(document.getElementById('try-out'), {childList: true, characterData: true,"
        " subtree: true});")
    box = page.driver.find_element(By.ID, "input")
    box.clear()
    box.send_keys("count for me", Keys.CONTROL, Keys.ENTER)
    page.wait(lambda: "done" in page.text("#try-state"))
    assert page.text("#try-out") == "one two three four five six"
    # Six words arrived one by one before the result replaced them with the whole text.
    assert page.driver.execute_script("return window.updates") >= 6
    run_link = page.driver.find_element(By.CSS_SELECTOR, "#try-state a")
    assert run_link.get_attribute("href").endswith("/ui/runs/" + run_link.text.split()[-1])
    page.shot("try-it")
    page.open("/ui/pipelines/broken")  # a run that fails shows why
    page.driver.find_element(By.ID, "run-btn").click()
    page.wait(lambda: "failed (502)" in page.text("#try-state"))
    assert "every deployment of model alias 'broken' failed" in page.text("#try-out")
    # The 502 answer is the one console error expected here.
    assert [e["message"].split(" - ")[0] for e in page.errors()] == [
        live.base + "/api/pipelines/broken/run"]


def test_live_log_tails_lines_of_one_pipeline(page: Page, live: Live) -> None:
    page.open("/ui/logs?pipeline=broken&level=warning")
    page.wait(lambda: "live" in page.text("#log-state"))
    before = page.count("#log .line")
    live.post("/hooks/broken", {})
    live.post("/hooks/echo", {"name": "x"})  # another pipeline: filtered out
    page.wait(lambda: page.count("#log .line") > before)
    lines = page.texts("#log .line")
    assert any("run_failed" in t and "pipeline=broken" in t for t in lines)
    assert all("pipeline=broken" in t for t in lines)
    page.shot("logs")


def test_dark_mode_and_keyboard_navigation(page: Page, live: Live) -> None:
    page.open("/ui/pipelines")
    body = page.driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the first stop is the skip link
    active = page.driver.switch_to.active_element
    assert active.text == "Skip to content"
    light = page.driver.execute_script(
        "return getComputedStyle(document.documentElement).backgroundColor")
    page.driver.find_element(By.ID, "theme").click()
    dark = page.driver.execute_script(
        "return getComputedStyle(document.documentElement).backgroundColor")
    assert light != dark
    page.shot("pipelines-dark")
    page.open("/ui/runs")
    assert page.driver.execute_script("return document.documentElement.dataset.theme") == "dark"
    page.shot("runs-dark")
    page.driver.find_element(By.ID, "theme").click()


def test_push_to_talk_resamples_to_16khz_s16le(page: Page, live: Live) -> None:
    page.open("/ui/pipelines")
    result = page.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/static/talk.js').then((m) => {
          const r = new m.Resampler(48000, 16000);
          const out = [];
          for (let block = 0; block < 10; block++) {  // 1 kHz sine in blocks of 2048
            const x = new Float32Array(2048);
            for (let i = 0; i < x.length; i++)
              x[i] = 0.5 * Math.sin(2 * Math.PI * 1000 * (block * 2048 + i) / 48000);
            out.push(...r.push(x));
          }
          let crossings = 0;
          for (let i = 1; i < out.length; i++) if ((out[i - 1] < 0) !== (out[i] < 0)) crossings++;
          const bytes = new Uint8Array(m.toS16le(Float32Array.from([0.5, -1])));
          done({n: out.length, crossings, bytes: Array.from(bytes)});
        });
    """)
    assert abs(result["n"] - 20480 // 3) <= 1  # 10 x 2048 samples at 48 kHz -> 16 kHz
    seconds = 20480 / 48000
    assert abs(result["crossings"] - 2 * 1000 * seconds) <= 3  # still a 1 kHz tone
    assert result["bytes"] == [0xFF, 0x3F, 0x00, 0x80]  # 16383, -32768 little-endian


@pytest.mark.model
def test_push_to_talk_sends_the_microphone_and_plays_the_reply(page: Page, live: Live) -> None:
    page.open("/ui/pipelines/talk")
    page.driver.execute_script("""
        window.played = 0;
        const start = AudioBufferSourceNode.prototype.start;
        AudioBufferSourceNode.prototype.start = function (...args) {
          window.played++;
          return start.apply(this, args);
        };""")
    talk = page.driver.find_element(By.ID, "talk")
    # Hold the button while the fake microphone says its sentence, then let go.
    ActionChains(page.driver).click_and_hold(talk).pause(3.5).release().perform()
    page.wait(lambda: page.text("#ptt-state") == "done", timeout=60)
    heard = page.text("#ptt-out")
    assert heard.startswith("you: ") and "kitchen lights" in heard.lower()
    assert page.driver.execute_script("return window.played") > 0  # the reply was played
    page.shot("push-to-talk")
    run = live.call(live.d.daemon.runlog.query(pipeline="talk", limit=1))[0]
    assert run["status"] == "ok" and run["trigger"] == "websocket"
    page.open(f"/ui/runs/{run['id']}")
    turn = page.text("#voice ~ p")
    assert "by silence" in turn and "after the last word" in turn
    timings = page.text("#voice ~ table")
    assert "stt: transcription" in timings and "play: first audio after the text" in timings
    page.shot("voice-run")


def test_read_only_pages_work_without_javascript(page: Page, live: Live) -> None:
    _, run_id, _ = live.post("/hooks/chain", {"name": "Grace"})
    page.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.open("/ui/pipelines")
        assert not page.driver.find_element(By.ID, "theme").is_displayed()  # no script ran
        assert "- templat: x" in page.text("section.problem .excerpt .hit")
        page.open("/ui/runs?pipeline=chain")
        page.driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
        # The form's navigation is asynchronous: wait for it, or it can land after (and
        # instead of) the next page.open.
        page.wait(lambda: "status=" in page.driver.current_url)
        assert "chain" in page.text("table.runs tbody")
        page.open(f"/ui/runs/{run_id}")
        assert page.count("ol.waterfall > li") == 4
        page.open("/ui/router")
        assert "openai/m1" in page.text("#a-fast + table")
        page.shot("runs-no-js")
    finally:
        page.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_runs_page_shows_new_runs_live(page: Page, live: Live) -> None:
    page.open("/ui/runs?pipeline=echo")
    before = page.count("table.runs tbody tr")
    live.post("/hooks/echo", {"name": "live"})
    page.wait(lambda: page.count("table.runs tbody tr") == before + 1)
    # With the keyboard focus on a run's link the table waits, then catches up.
    page.driver.find_element(By.CSS_SELECTOR, "table.runs tbody a").send_keys(Keys.NULL)
    focused = page.driver.execute_script("return document.activeElement.outerHTML")
    live.post("/hooks/echo", {"name": "later"})
    page.driver.find_element(By.NAME, "pipeline").send_keys(Keys.NULL)  # focus moves out
    page.wait(lambda: page.count("table.runs tbody tr") == before + 2)
    assert "/ui/runs/" in focused


def test_a_running_run_page_updates_when_the_run_ends(page: Page, live: Live) -> None:
    status, run_id, _ = live.post("/hooks/slowjob", "go")
    assert status == 202
    page.open(f"/ui/runs/{run_id}")
    assert page.text("h1 .badge") == "running"
    page.wait(lambda: page.text("h1 .badge") == "ok")
    assert page.text("#out + pre") == "a b c d e f"


def test_signing_in_with_the_token(page: Page, tmp_path: Path) -> None:
    token = "browser-token-42"
    with spawn_daemon(tmp_path, {"echo": "trigger: {http: {}}\nsteps: [{template: hi}]\n"},
                      env={"HARKD_TOKEN": token}) as d:
        page.driver.get(d.url("/ui/runs"))
        page.wait(lambda: "/ui/login" in page.driver.current_url)
        page.shot("login")
        box = page.driver.find_element(By.ID, "token")
        box.send_keys("wrong", Keys.ENTER)
        page.wait(lambda: "not right" in page.text("main"))
        page.driver.find_element(By.ID, "token").send_keys(token, Keys.ENTER)
        page.wait(lambda: page.driver.current_url == d.url("/ui/runs"))
        assert page.text("h1") == "Runs"
        page.driver.find_element(By.CSS_SELECTOR, "header form button").click()  # sign out
        page.wait(lambda: "/ui/login" in page.driver.current_url)
    # The wrong token's page answered 401: the one console error the test expects.
    assert [e["message"].split(" - ")[0] for e in page.errors()] == [d.url("/ui/login")]


def test_run_page_of_an_unknown_run_is_a_plain_404(page: Page, live: Live) -> None:
    page.open("/ui/runs/nope")
    assert "No run with id 'nope'" in page.text("main")
    # The one console entry is the page's own 404 (get_log drains it, so the fixture's
    # check after the test sees the rest).
    assert [e["message"].split(" - ")[0] for e in page.errors()] == [live.base + "/ui/runs/nope"]
