"""Response caching: off by default, per alias or per step, memory or SQLite, never errors.

Against the scripted upstream (a fault-injection peer), which counts the calls it got.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harkd.router import ChatRequest, Router
from harkd.settings import Settings
from harkd.testing import run_daemon
from harkd.testing_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.anyio


def _settings(up: ScriptedUpstream, state: Path, cache: dict[str, object] | None) -> Settings:
    router: dict[str, object] = {"retries": 0}
    if cache is not None:
        router["cache"] = cache
    return Settings(state=state, router=router, models={
        "m": [{"model": "openai/m", "api_base": up.v1, "api_key": "k"}],
        "n": [{"model": "openai/n", "api_base": up.v1, "api_key": "k"}]})


def _req(model: str = "m", text: str = "hi", **kw: object) -> ChatRequest:
    return ChatRequest(model=model, messages=({"role": "user", "content": text},), **kw)  # type: ignore[arg-type]


async def test_off_by_default(tmp_path: Path) -> None:
    async with ScriptedUpstream() as up:
        router = Router.from_settings(_settings(up, tmp_path, None))
        for _ in range(3):
            assert not (await router.complete(_req())).cached
        assert up.calls("m") == 3
        await router.aclose()


async def test_per_alias_exact_match_and_errors_not_cached(tmp_path: Path) -> None:
    async with ScriptedUpstream() as up:
        router = Router.from_settings(_settings(up, tmp_path, {"aliases": ["m"], "ttl": "1m"}))
        up.plan("m", Reply(status=500))
        with pytest.raises(Exception):  # noqa: B017 - the failure itself is not the point
            await router.complete(_req())
        first = await router.complete(_req())
        again = await router.complete(_req())
        assert not first.cached and again.cached and again.text == first.text
        assert again.detail()["cached"] is True
        assert up.calls("m") == 2  # the failure and the first answer; the hit made none
        assert not (await router.complete(_req(text="other"))).cached
        assert not (await router.complete(_req(temperature=0.5))).cached
        assert not (await router.complete(_req(model="n"))).cached  # alias not listed
        assert (await router.complete(_req(model="n", cache=True))).cached is False
        assert (await router.complete(_req(model="n", cache=True))).cached is True
        assert not (await router.complete(_req(cache=False))).cached
        await router.aclose()


async def test_streams_cached_only_when_whole(tmp_path: Path) -> None:
    async with ScriptedUpstream() as up:
        router = Router.from_settings(_settings(up, tmp_path, {"aliases": ["m"]}))
        up.plan("m", Reply(break_after=1))
        with pytest.raises(Exception):  # noqa: B017
            async for _ in router.stream(_req(text="a b c d")):
                pass
        stream = router.stream(_req(text="a b c d"))
        assert "".join([c async for c in stream]) == "echo: a b c d"
        hit = router.stream(_req(text="a b c d"))
        assert [c async for c in hit] == ["echo: a b c d"] and hit.response is not None
        assert hit.response.cached
        await router.aclose()


async def test_sqlite_store_survives_a_new_router(tmp_path: Path) -> None:
    async with ScriptedUpstream() as up:
        cfg = {"aliases": ["m"], "store": "sqlite", "ttl": 60}
        router = Router.from_settings(_settings(up, tmp_path, cfg))
        await router.complete(_req())
        await router.aclose()
        again = Router.from_settings(_settings(up, tmp_path, cfg))
        assert (await again.complete(_req())).cached
        assert up.calls("m") == 1
        assert (tmp_path / "cache" / "responses.sqlite3").exists()
        await again.aclose()


async def test_cache_hit_is_visible_in_the_run_log(tmp_path: Path) -> None:
    async with ScriptedUpstream() as up:
        config = (f"models:\n  m: [{{model: openai/m, api_base: '{up.v1}', api_key: k}}]\n"
                  "router: {cache: {ttl: 5m}}\n")
        yaml = "trigger: {http: {}}\nsteps:\n  - llm: {model: m, prompt: 'q', cache: true}\n"
        async with run_daemon(tmp_path, {"c": yaml}, config=config) as d:
            ids = []
            for _ in range(2):
                async with d.http.post(d.url("/hooks/c")) as r:
                    assert await r.text() == "echo: q"
                    ids.append(r.headers["X-Harkd-Run-Id"])
            assert up.calls("m") == 1

            async def detail(run_id: str) -> dict[str, object]:
                from harkd.testing import wait_until

                async def logged() -> bool:
                    async with d.http.get(d.url(f"/api/runs/{run_id}")) as r:
                        return r.status == 200 and (await r.json())["status"] == "ok"

                await wait_until(logged)
                async with d.http.get(d.url(f"/api/runs/{run_id}")) as r:
                    run = await r.json()
                return dict(run["steps"][0]["detail"])

            assert "cached" not in await detail(ids[0])
            assert (await detail(ids[1]))["cached"] is True
