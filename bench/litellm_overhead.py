"""A LiteLLM-backed call next to harkd's own pooled backend (issue 17).

Scripted upstreams answer instantly in a child process: OpenAI-compatible
(``harkd.testing_upstream``) and Anthropic's Messages API (``harkd.testing_cloud``).
Sequential calls, in interleaved batches so drift hits all alike:

- direct openai (baseline): a pooled aiohttp POST of a chat body, JSON parsed;
- harkd openai: ``Router.complete`` on an ``openai/...`` deployment (harkd's own backend);
- direct anthropic (baseline): a pooled aiohttp POST to ``/v1/messages``, JSON parsed;
- litellm: ``litellm.acompletion`` on ``anthropic/...`` directly;
- harkd anthropic: ``Router.complete`` on an ``anthropic/...`` deployment (through LiteLLM).

Figures: median per-call time (min-max over batches) and each path's cost over its
dialect's direct call.

    .venv/bin/python bench/litellm_overhead.py [--batches 10] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

MODEL = "claude-3-5-haiku-20241022"
BODY = {"model": "m1", "messages": [{"role": "user", "content": "Say hello."}]}


async def serve(openai_port: int, anthropic_port: int) -> None:
    from harkd.testing_cloud import ScriptedAnthropic
    from harkd.testing_upstream import ScriptedUpstream

    ups = []
    for cls, port in ((ScriptedUpstream, openai_port), (ScriptedAnthropic, anthropic_port)):
        up = cls()
        up.port, up.base = port, f"http://127.0.0.1:{port}"
        up.v1 = up.base + "/v1"
        up.record = False
        ups.append(up)
    async with ups[0], ups[1]:
        print("ready", flush=True)
        await asyncio.Event().wait()


async def measure(batches: int, calls: int, openai_port: int, anthropic_port: int) -> None:
    import aiohttp

    from harkd.router import ChatRequest, Router
    from harkd.settings import Settings

    oa = f"http://127.0.0.1:{openai_port}/v1"
    an = f"http://127.0.0.1:{anthropic_port}"
    router = Router.from_settings(Settings(models={
        "native": [{"model": "openai/m1", "api_base": oa}],
        "cloud": [{"model": f"anthropic/{MODEL}", "api_base": an, "api_key": "bench"}]}))
    native = ChatRequest(model="native", messages=tuple(BODY["messages"]))
    cloud = ChatRequest(model="cloud", messages=tuple(BODY["messages"]))
    await router.complete(cloud)  # imports litellm (in a thread)
    import litellm

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
    raw_openai = json.dumps(BODY).encode()
    raw_anthropic = json.dumps({**BODY, "model": MODEL, "max_tokens": 256}).encode()
    headers = {"Content-Type": "application/json"}
    an_headers = {**headers, "x-api-key": "bench", "anthropic-version": "2023-06-01"}

    async def direct_openai() -> None:
        async with session.post(oa + "/chat/completions", data=raw_openai,
                                headers=headers) as r:
            json.loads(await r.read())

    async def harkd_openai() -> None:
        await router.complete(native)

    async def direct_anthropic() -> None:
        async with session.post(an + "/v1/messages", data=raw_anthropic,
                                headers=an_headers) as r:
            json.loads(await r.read())

    async def plain_litellm() -> None:
        await litellm.acompletion(model=f"anthropic/{MODEL}", api_base=an, api_key="bench",
                                  messages=BODY["messages"], num_retries=0)

    async def harkd_anthropic() -> None:
        await router.complete(cloud)

    paths: dict[str, Callable[[], Awaitable[None]]] = {
        "direct openai (baseline)": direct_openai, "harkd openai backend": harkd_openai,
        "direct anthropic (baseline)": direct_anthropic, "litellm.acompletion": plain_litellm,
        "harkd via LiteLLM": harkd_anthropic}
    for fn in paths.values():
        for _ in range(20):
            await fn()
    per: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(batches):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                await fn()
            per[name].append((time.perf_counter() - t0) / calls * 1000)
    await session.close()
    await router.aclose()
    med = {k: statistics.median(v) for k, v in per.items()}
    for name, v in per.items():
        print(f"{name:28} {med[name]:7.3f} ms per call ({min(v):.3f}-{max(v):.3f})")
    base_o, base_a = med["direct openai (baseline)"], med["direct anthropic (baseline)"]
    print(f"harkd openai backend over direct: {med['harkd openai backend'] - base_o:+.3f} ms "
          f"(ratio {med['harkd openai backend'] / base_o:.2f})")
    print(f"litellm.acompletion over direct:  {med['litellm.acompletion'] - base_a:+.3f} ms "
          f"(ratio {med['litellm.acompletion'] / base_a:.2f})")
    print(f"harkd via LiteLLM over direct:    {med['harkd via LiteLLM'] - base_a:+.3f} ms "
          f"(ratio {med['harkd via LiteLLM'] / base_a:.2f}); over litellm alone "
          f"{med['harkd via LiteLLM'] - med['litellm.acompletion']:+.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    from harkd.testing import free_port

    ports = (free_port(), free_port())
    child = subprocess.Popen([sys.executable, __file__, "--serve", *map(str, ports)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the scripted upstreams did not start")
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
              f"{args.batches} batches of {args.calls} sequential calls each")
        asyncio.run(measure(args.batches, args.calls, *ports))
    finally:
        child.terminate()
        child.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
