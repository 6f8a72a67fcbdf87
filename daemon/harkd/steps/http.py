"""The ``http`` step: an outgoing request through the daemon's pooled client session."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from .. import durations
from ..core.registry import StepKind
from ..errors import StepError
from ..records import dataclass
from ..templates import Renderable

if TYPE_CHECKING:
    from ..core.pipeline import Build
    from ..core.run import Run

MAX_RESPONSE = 10 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class HttpStep:
    """Send one request; the output is the parsed JSON response, or its text."""

    url: Renderable
    method: str
    headers: Renderable
    json: Renderable | None
    body: Renderable | None
    timeout: float
    fail: bool

    async def __call__(self, run: Run, data: Any) -> Any:
        import aiohttp

        ctx = run.context(data)
        url = str(self.url.render(ctx))
        kwargs: dict[str, Any] = {"headers": {k: str(v) for k, v in
                                              (self.headers.render(ctx) or {}).items()}}
        if self.json is not None:
            kwargs["json"] = self.json.render(ctx)
        elif self.body is not None:
            body = self.body.render(ctx)
            kwargs["data"] = body if isinstance(body, str | bytes) else json.dumps(body)
        run.step.detail.update(method=self.method, url=url)
        run.services.check_network(f"{self.method} {url}")
        try:
            async with run.services.http().request(
                self.method, url, timeout=aiohttp.ClientTimeout(total=self.timeout), **kwargs
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE + 1)
                run.step.detail["status"] = resp.status
                if len(raw) > MAX_RESPONSE:
                    raise StepError(f"{self.method} {url}: response is over "
                                    f"{MAX_RESPONSE:,} bytes")
                if self.fail and resp.status >= 400:
                    raise StepError(f"{self.method} {url} answered {resp.status}: "
                                    f"{raw[:200].decode(errors='replace')}")
                text = raw.decode(resp.charset or "utf-8", errors="replace")
                if resp.content_type == "application/json" or \
                        resp.content_type.endswith("+json"):
                    try:
                        return json.loads(text)
                    except json.JSONDecodeError:
                        return text
                return text
        except TimeoutError:
            raise StepError(f"{self.method} {url} timed out after {self.timeout:g}s",
                            status=504) from None
        except aiohttp.ClientError as exc:
            raise StepError(f"{self.method} {url} failed: {exc}") from None
        except asyncio.CancelledError:
            raise


def _build(params: dict[str, Any], b: Build) -> HttpStep:
    if "json" in params and "body" in params:
        b.error("body", "give json or body, not both")
    return HttpStep(
        url=b.text("url", params["url"]),
        method=params.get("method", "POST" if ("json" in params or "body" in params)
                          else "GET").upper(),
        headers=b.value("headers", params.get("headers", {})),
        json=b.value("json", params["json"]) if "json" in params else None,
        body=b.value("body", params["body"]) if "body" in params else None,
        timeout=b.seconds("timeout", params.get("timeout", 30)),
        fail=bool(params.get("fail", True)),
    )


HTTP = StepKind(
    "http",
    "Send an HTTP request; the output is the parsed JSON response or its text.",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD",
                                "get", "post", "put", "patch", "delete", "head"],
                       "description": "Default POST with a json or body, else GET."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "json": {"description": "A JSON body; string leaves are templates."},
            "body": {"description": "A raw body (a template)."},
            "timeout": {**durations.SCHEMA, "default": 30},
            "fail": {"type": "boolean", "default": True,
                     "description": "Fail the run on a 4xx or 5xx answer."},
        },
    },
    _build,
    shorthand="url",
)
