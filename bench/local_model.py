"""Benchmark the embedded local model through its supervised worker.

Measures, over several runs, the load time (process start to ``ready``), the time to the
first streamed token and the total time of a short chat question, and generation speed in
tokens per second on a longer raw completion. Prints the median with min and max, and the
core count, since the figures depend on it::

    .venv/bin/python bench/local_model.py [--runs 5] [--threads N] [--state DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from harkd.localmodel import LocalModel, Options

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def summary(name: str, values: Sequence[float], unit: str) -> str:
    return (f"{name:<28} median {statistics.median(values):8.3f} {unit:<5} "
            f"min {min(values):8.3f}  max {max(values):8.3f}  (n={len(values)})")


async def chat_once(http: aiohttp.ClientSession, url: str) -> tuple[float, float, str]:
    """Time to first token and total time of one streamed chat answer, and its text."""
    began = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    async with http.post(f"{url}/v1/chat/completions",
                         json={"messages": QUESTION, "stream": True}) as resp:
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter() - began
                text.append(delta)
    return first or float("nan"), time.perf_counter() - began, "".join(text)


async def speed_once(http: aiohttp.ClientSession, url: str, tokens: int) -> float:
    """Generated tokens per second of one raw completion (prompt evaluation included)."""
    began = time.perf_counter()
    async with http.post(f"{url}/v1/completions", json={
            "prompt": "Once upon a time", "max_tokens": tokens}) as resp:
        body = await resp.json()
    return float(body["usage"]["completion_tokens"]) / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> None:
    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="harkd-bench-"))
    options = Options(threads=args.threads) if args.threads else Options()
    print(f"cores: {os.cpu_count()}  llama.cpp threads: {options.threads}  "
          f"runs: {args.runs}  load average: {os.getloadavg()[0]:.2f}")
    loads: list[float] = []
    ttfts: list[float] = []
    totals: list[float] = []
    speeds: list[float] = []
    answer = ""
    async with aiohttp.ClientSession() as http:
        for _ in range(args.runs):
            model = LocalModel("gemma-3-270m", state, options)
            began = time.perf_counter()
            url = await model.ensure()
            loads.append(time.perf_counter() - began)
            try:
                await chat_once(http, url)  # the first request also warms the prompt cache
                for _ in range(3):
                    ttft, total, answer = await chat_once(http, url)
                    ttfts.append(ttft)
                    totals.append(total)
                speeds.append(await speed_once(http, url, args.tokens))
            finally:
                await model.aclose()
    print(summary("load (start to ready)", loads, "s"))
    print(summary("chat time to first token", ttfts, "s"))
    print(summary("chat total (short answer)", totals, "s"))
    print(summary(f"raw completion, {args.tokens} tok", speeds, "tok/s"))
    print(f"answer: {answer!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="0: the default")
    parser.add_argument("--state", default=None, help="state folder (default: a temp one)")
    asyncio.run(main(parser.parse_args()))
