"""Without ``cluster:`` nothing changes and the ``redis`` package is never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = '''
import asyncio, sys
from pathlib import Path
from harkd.testing import run_daemon
from harkd.testing_upstream import ScriptedUpstream

async def main(root):
    async with ScriptedUpstream() as up:
        config = ("models:\\n  m: [{model: openai/m1, api_base: '" + up.v1 + "', api_key: k, "
                  "rpm: 100}]\\nrouter: {cache: {aliases: [m]}}\\n")
        files = {
            "chat": "trigger: {http: {}}\\nsteps:\\n  - llm: {model: m, session: s, "
                    "prompt: '{{ input }}'}\\n",
            "tick": "trigger: {cron: {schedule: '* * * * * *'}}\\nsteps: [{template: t}]\\n",
        }
        async with run_daemon(root, files, config=config) as d:
            for text in ("one", "two"):
                async with d.http.post(d.url("/hooks/chat"), json=text) as resp:
                    assert resp.status == 200, await resp.text()
            async with d.http.get(d.url("/readyz")) as resp:
                assert "cluster" not in await resp.json()
    print("redis imported:", "redis" in sys.modules)

asyncio.run(main(Path(sys.argv[1])))
'''


def test_no_cluster_never_imports_redis(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "redis imported: False" in out.stdout
