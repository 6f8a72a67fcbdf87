"""The admin API: runs with filters and pagination, the token, and the OpenAPI document
checked against the routes and against real answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harkd.testing import DaemonHandle, run_daemon

pytestmark = pytest.mark.anyio

OK = "trigger: {http: {}}\nsteps:\n  - template: 'ok {{ input.n }}'\n"
FAIL = ("trigger: {http: {}}\nsteps:\n  - http: {url: 'http://127.0.0.1:9/', "
        "timeout: 1}\n")
BAD = "trigger: {http: {}}\nsteps:\n  - templat: x\n"


async def _get(d: DaemonHandle, path: str, status: int = 200) -> Any:
    async with d.http.get(d.url(path)) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def test_runs_filters_and_pages(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK, "fail": FAIL}) as d:
        for n in range(5):
            await (await d.http.post(d.url("/hooks/ok"), json={"n": n})).release()
        await (await d.http.post(d.url("/hooks/fail"), json={})).release()
        everything = await _get(d, "/api/runs")
        assert len(everything["runs"]) == 6 and everything["next_cursor"] is None
        assert [r["pipeline"] for r in await _runs(d, "?pipeline=ok")] == ["ok"] * 5
        failed = await _runs(d, "?status=error")
        assert [r["pipeline"] for r in failed] == ["fail"] and failed[0]["error"]
        page1 = await _get(d, "/api/runs?pipeline=ok&limit=2")
        page2 = await _get(d, f"/api/runs?pipeline=ok&limit=2&cursor={page1['next_cursor']}")
        page3 = await _get(d, f"/api/runs?pipeline=ok&limit=2&cursor={page2['next_cursor']}")
        ids = [r["id"] for p in (page1, page2, page3) for r in p["runs"]]
        assert len(set(ids)) == 5 and page3["next_cursor"] is None
        assert [r["id"] for r in await _runs(d, "?pipeline=ok")] == ids  # newest first
        await _get(d, "/api/runs?status=weird", 400)
        await _get(d, "/api/runs?limit=0", 400)
        await _get(d, "/api/runs?cursor=abc", 400)
        await _get(d, "/api/runs/nope", 404)


async def _runs(d: DaemonHandle, query: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await _get(d, "/api/runs" + query))["runs"]
    return runs


async def test_token_protects_runs_and_openapi(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK}, token="tok-123456") as d:
        await _get(d, "/api/runs", 401)
        await _get(d, "/api/openapi.json", 401)
        async with d.http.get(d.url("/api/runs"),
                              headers={"Authorization": "Bearer tok-123456"}) as r:
            assert r.status == 200
        async with d.http.get(d.url("/metrics")) as r:  # scraped without the token
            assert r.status == 200
        # Every route is guarded, whichever module added it, and so is a path under /api
        # that no route serves (the catch-all asks too); a webhook needs no token.
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("POST", "/mcp"), ("HEAD", "/api/pipelines"),
                             ("GET", "/api/no-such-thing"), ("POST", "/api/reload")):
            async with d.http.request(method, d.url(path)) as r:
                assert r.status == 401, (method, path, r.status)
                assert r.headers["WWW-Authenticate"] == "Bearer"
        async with d.http.get(d.url("/api/no-such-thing"),
                              headers={"Authorization": "Bearer tok-123456"}) as r:
            assert r.status == 404
        async with d.http.post(d.url("/hooks/ok"), json={"n": 7}) as r:
            assert r.status == 200 and await r.text() == "ok 7"


async def test_openapi_names_every_route_and_answers_match_it(tmp_path: Path) -> None:
    async with run_daemon(tmp_path, {"ok": OK, "bad": BAD}) as d:
        doc = await _get(d, "/api/openapi.json")
        assert doc["openapi"].startswith("3.1")
        routes = set()
        for resource in d.daemon.app().router.resources():
            info = resource.get_info()
            path = info.get("path") or info.get("formatter", "")
            if path.startswith("/api/"):
                for route in resource:
                    if route.method != "HEAD":
                        routes.add((path, route.method.lower()))
        documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
        assert routes == documented

        async with d.http.post(d.url("/api/pipelines/ok/run"), json={"input": {"n": 7}}) as r:
            assert await r.text() == "ok 7"
            run_id = r.headers["X-Harkd-Run-Id"]

        def check(path: str, method: str, status: str, body: Any) -> None:
            schema = doc["paths"][path][method]["responses"][status]["content"][
                "application/json"]["schema"]
            resolver = {"components": doc["components"], **schema}
            jsonschema.Draft202012Validator(resolver).validate(body)

        check("/api/pipelines", "get", "200", await _get(d, "/api/pipelines"))
        check("/api/pipelines/{name}", "get", "200", await _get(d, "/api/pipelines/bad"))
        check("/api/pipelines/{name}", "get", "404", await _get(d, "/api/pipelines/x", 404))
        check("/api/runs", "get", "200", await _get(d, "/api/runs"))
        check("/api/runs", "get", "400", await _get(d, "/api/runs?limit=-1", 400))
        check("/api/runs/{id}", "get", "200", await _get(d, f"/api/runs/{run_id}"))
        check("/api/runs/{id}", "get", "404", await _get(d, "/api/runs/zzz", 404))
        async with d.http.post(d.url("/api/reload")) as r:
            check("/api/reload", "post", "200", await r.json())
        bad = (await _get(d, "/api/pipelines/bad"))
        assert bad["state"] == "rejected" and bad["errors"][0]["line"] == 3


async def test_openapi_schema_is_itself_valid_json_schema(tmp_path: Path) -> None:
    from harkd.http.openapi import document

    doc = document("test")
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator({"components": doc["components"],
                                         "$ref": "#/components/schemas/RunSummary"}
                                        ).validate({"id": 1})
