"""What harkd run's start leaves for later: the router loads with the first LLM call (and
the metrics still hear of every call it makes), jsonschema only for a broken file, PyYAML
not at all on a restart of unchanged files, and there only the step and trigger kinds its
pipelines use, with the entry points read from the state folder; the collector waits
until the daemon is ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harkd.daemon import ROUTER_OBSERVERS
from harkd.router import router_observers
from harkd.router.core import OBSERVERS_KEY
from harkd.testing import run_daemon

pytestmark = pytest.mark.anyio


async def test_the_metrics_observe_the_router_that_loads_later(tmp_path: Path) -> None:
    assert ROUTER_OBSERVERS == OBSERVERS_KEY
    config = "models:\n  m:\n    - {model: openai/x, api_base: 'http://127.0.0.1:9/v1'}\n"
    async with run_daemon(tmp_path, config=config) as d:
        router = d.daemon.services.router
        assert d.daemon.metrics.observe_llm_call in router_observers(d.daemon.services)
        assert router.observers is router_observers(d.daemon.services)


# harkd run in a child process, as `python -m harkd run` would be, with Daemon.serve
# wrapped to report the collector's state and the modules loaded once ready, then stop.
PROBE = """
import gc, sys
print("AT IMPORT", gc.isenabled())
from harkd import daemon
from harkd.core import entrypoints

serve = daemon.Daemon.serve
scans = []
scan = entrypoints.scan_entry_points
entrypoints.scan_entry_points = lambda: scans.append(1) or scan()


async def probe(self, started=None):
    print("STARTING", gc.isenabled())

    def ready(address):
        started(address)
        print("READY", gc.isenabled(), gc.get_freeze_count() > 1000, gc.get_threshold()[0])
        print("LOADED", *sorted(m for m in ("yaml", "jsonschema", "harkd.router", "zoneinfo")
                                if m in sys.modules))
        print("KINDS", *sorted(m for m in sys.modules
                               if m.startswith(("harkd.steps.", "harkd.triggers.",
                                                "harkd.voice", "harkd.router",
                                                "harkd.cluster", "harkd.telemetry"))))
        print("SCANNED", bool(scans), "importlib.metadata" in sys.modules)
        self.stop()

    return await serve(self, ready)


daemon.Daemon.serve = probe
from harkd.cli import main

sys.exit(main(sys.argv[1:]))
"""

ECHO = "trigger: {http: {}}\nsteps:\n  - template: 'hi {{ input }}'\n"


def start(tmp_path: Path) -> list[str]:
    """Start harkd run on ``tmp_path/pipelines`` until ready; the probe's lines."""
    probe = tmp_path / "bin" / "probe.py"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text(PROBE)
    # The probe's folder is the first of sys.path: dated back like an installed package's,
    # so that the start may keep its scan of the entry points (see core.entrypoints).
    os.utime(probe.parent, ns=(10**18, 10**18))  # 2001
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    cmd = [sys.executable, str(probe), "run", "--pipelines",
           str(tmp_path / "pipelines"), "--state", str(tmp_path / "state"), "--listen",
           "127.0.0.1:0", "--log-level", "warning"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={**os.environ, "HARKD_CONFIG": ""})
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_the_collector_is_off_while_starting_and_on_once_ready(tmp_path: Path) -> None:
    assert start(tmp_path)[:3] == ["AT IMPORT True", "STARTING False",
                                   "READY True True 10000"]
    # Other commands run with it on, as imported.
    r = subprocess.run([sys.executable, "-c", "import gc, harkd.cli as c; c.main(['schema', "
                        "'--builtin']); print(gc.isenabled())"], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip().endswith("True"), r.stderr


def test_valid_files_need_no_jsonschema_and_a_restart_no_yaml(tmp_path: Path) -> None:
    """Nor does either start load the router (it loads with the first LLM call), or
    zoneinfo (the cron kind, imported to validate, needs it only for a cron pipeline)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "echo.yaml").write_text(ECHO)
    seen = [start(tmp_path)[3], start(tmp_path)[3]]
    # The quick check passed the file; jsonschema would have been loaded for errors only.
    assert seen == ["LOADED yaml", "LOADED"]


def test_a_start_imports_only_the_kinds_its_pipelines_use(tmp_path: Path) -> None:
    """Nor the voice parts, the router, the cluster or telemetry: a webhook's start
    without cluster: or telemetry: in harkd.yaml needs none of them. The first start
    validates against a schema of the kinds the file names; a restart takes the document
    from the state folder."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "echo.yaml").write_text(ECHO)
    first = start(tmp_path)
    assert first[4] == "KINDS harkd.steps.basic harkd.triggers.http"
    # The entry points were read from the distributions' folders, not importlib.metadata.
    assert first[5] == "SCANNED True False"
    again = start(tmp_path)
    assert again[4] == "KINDS harkd.steps.basic harkd.triggers.http"
    assert again[5] == "SCANNED False False"  # the entry points came from the state folder


def test_the_parser_built_for_one_command_is_that_command_of_the_whole() -> None:
    """harkd builds only the command it runs: its help, options and defaults are the
    whole parser's; help and unknown commands get the whole parser."""
    import argparse

    from harkd import cli

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(sub.choices)

    full = cli._parser()
    assert len(commands(full)) > 10
    for name, whole in commands(full).items():
        (one,) = commands(cli._parser(name)).values()
        assert one.format_help() == whole.format_help()
        assert one.get_default("func") is whole.get_default("func")
    assert cli._parser("nosuch").format_help() == full.format_help()
    assert commands(cli._parser("nosuch")).keys() == commands(full).keys()
