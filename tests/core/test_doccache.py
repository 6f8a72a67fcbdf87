"""The state folder's cache of validated documents: a restart on unchanged files skips
parsing and validation, and what it loads is what a full load gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from harkd.core.doccache import DocCache
from harkd.core.loader import load_bytes
from harkd.core.registry import Registry, default
from harkd.testing import run_daemon, wait_until

ECHO = ("description: echo\ntrigger: {http: {}}\nsteps:\n"
        "  - template: 'hi {{ input }}'\n    as: greeting\n")
BROKEN = "trigger: {http: {}}\nsteps:\n  - templat: 'oops'\n"


def reopened(cache: DocCache, registry: Registry | None = None) -> DocCache:
    cache.save()
    assert cache.path is not None
    return DocCache.open(cache.path, registry or default())


def test_a_cached_document_loads_like_a_parsed_one(tmp_path: Path) -> None:
    cache = DocCache.open(tmp_path / "pipelines", default())
    first = load_bytes("/p/echo.yaml", ECHO.encode(), cache=cache)
    assert first.pipeline is not None and (cache.hits, cache.misses) == (0, 1)

    again = reopened(cache)
    # The same bytes in another file: the positions are that file's.
    second = load_bytes("/q/other.yaml", ECHO.encode(), cache=again)
    assert again.hits == 1 and second.pipeline is not None
    assert second.pipeline.trigger.routes == ("/hooks/other",)
    assert second.pipeline.description == "echo"
    assert [s.name for s in second.pipeline.steps] == ["greeting"]
    assert second.positions is not None and first.positions is not None
    assert second.positions.values == first.positions.values
    assert second.positions.keys == first.positions.keys
    assert second.at("/trigger").file == "/q/other.yaml"


def test_errors_after_validation_keep_their_position_from_the_cache(tmp_path: Path) -> None:
    text = b"trigger: {http: {}}\nsteps:\n  - template: '${env:HARKD_TEST_UNSET}'\n"
    cache = DocCache.open(tmp_path / "pipelines", default())
    ok = load_bytes("a.yaml", text, cache=cache, environ={"HARKD_TEST_UNSET": "x"})
    assert ok.pipeline is not None
    again = reopened(cache)
    failed = load_bytes("a.yaml", text, cache=again, environ={})
    assert again.hits == 1 and failed.pipeline is None
    (err,) = failed.errors
    assert "HARKD_TEST_UNSET is not set" in err.message
    assert (err.file, err.line, err.column) == ("a.yaml", 3, 15)


def test_a_broken_file_is_never_cached(tmp_path: Path) -> None:
    cache = DocCache.open(tmp_path / "pipelines", default())
    for _ in range(2):
        loaded = load_bytes("b.yaml", BROKEN.encode(), cache=cache)
        (err,) = loaded.errors
        assert (err.file, err.line, err.column) == ("b.yaml", 3, 5)
    assert cache.hits == 0
    again = reopened(cache)
    load_bytes("b.yaml", BROKEN.encode(), cache=again)
    assert again.hits == 0


def test_another_schema_discards_the_cache(tmp_path: Path) -> None:
    cache = DocCache.open(tmp_path / "pipelines", default())
    load_bytes("e.yaml", ECHO.encode(), cache=cache)
    fewer = Registry(steps=dict(default().steps), triggers=dict(default().triggers))
    del fewer.steps["llm"]
    other = reopened(cache, fewer)
    assert other.get(next(iter(cache._live)), "e.yaml") is None


def test_what_json_cannot_carry_is_not_cached(tmp_path: Path) -> None:
    # A YAML date: JSON would turn it into a string.
    text = (b"trigger: {http: {}}\nsteps:\n  - template: hi\n"
            b"tests:\n  - {name: d, input: 2024-01-02, expect: {output: hi}}\n")
    cache = DocCache.open(tmp_path / "pipelines", default())
    loaded = load_bytes("d.yaml", text, cache=cache)
    assert loaded.pipeline is not None
    assert loaded.pipeline.tests[0]["input"].year == 2024
    again = reopened(cache)
    assert cache.path is not None and len(cache.path.read_text().splitlines()) == 1
    assert again.get(loaded.digest, "d.yaml") is None
    assert load_bytes("d.yaml", text, cache=again).pipeline is not None


def test_a_damaged_cache_file_is_ignored(tmp_path: Path) -> None:
    cache = DocCache.open(tmp_path / "pipelines", default())
    load_bytes("e.yaml", ECHO.encode(), cache=cache)
    cache.save()
    path = tmp_path / "pipelines"
    head, _, rest = path.read_text().partition("\n")
    digest = rest.split("\t")[0]
    path.write_text(f"{head}\n{digest}\t[{{not json\n")
    again = DocCache.open(path, default())
    loaded = load_bytes("e.yaml", ECHO.encode(), cache=again)
    assert loaded.pipeline is not None and again.hits == 0 and again.misses == 1


@pytest.mark.anyio
async def test_a_restarted_daemon_takes_unchanged_files_from_the_cache(tmp_path: Path) -> None:
    files = {"echo": ECHO, "broken": BROKEN}
    async with run_daemon(tmp_path, files) as d:
        assert d.daemon.catalog.cache is not None and d.daemon.catalog.cache.hits == 0
    cached = (tmp_path / "state" / "cache" / "pipelines").read_text().splitlines()
    assert len(cached) == 2  # the stamp and echo; broken is not kept
    async with run_daemon(tmp_path) as d:
        assert d.daemon.catalog.cache is not None and d.daemon.catalog.cache.hits == 1
        assert d.state("echo") == "active" and d.state("broken") == "rejected"
        (err,) = d.daemon.catalog.entries["broken"].errors
        assert (err.line, err.column) == (3, 5)
        async with d.http.post(d.url("/hooks/echo"), data="x") as resp:
            assert await resp.text() == "hi x"
        await d.write("echo", ECHO.replace("hi", "hello"))
        d.daemon.catalog.save_cache()
    lines = (tmp_path / "state" / "cache" / "pipelines").read_text().splitlines()
    assert len(lines) == 3  # both versions of echo, until the next start drops the old


@pytest.mark.anyio
async def test_a_start_writes_the_cache_just_after_it_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cache" / "pipelines"
    async with run_daemon(tmp_path, {"echo": ECHO}) as d:
        await wait_until(path.exists)  # while it serves, not only when it stops
        assert d.daemon.ready and len(path.read_text().splitlines()) == 2
