"""`harkd check` and the other offline commands, run as the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def harkd(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HARKD_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "harkd", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=full_env, input=stdin, timeout=60)


def test_check_valid_folder_exits_0() -> None:
    r = harkd("check", "pipelines")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all valid" in r.stderr


def test_check_reports_every_error_with_positions_and_exits_78(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("trigger: {http: {}}\nsteps:\n  - templat: x\n")
    (tmp_path / "b.yaml").write_text("trigger: {http: {}\n")
    (tmp_path / "c.yaml").write_text("trigger: {http: {}}\nsteps: [{template: ok}]\n")
    (tmp_path / "d.yaml").write_text("trigger: {http: {path: /hooks/c}}\nsteps: [{log: x}]\n")
    r = harkd("check", str(tmp_path))
    assert r.returncode == 78
    lines = r.stdout.splitlines()
    assert f"{tmp_path}/a.yaml:3:5: unknown step 'templat'; did you mean 'template'?" \
        " (at /steps/0/templat)" in lines
    assert any(line.startswith(f"{tmp_path}/b.yaml:") and "YAML syntax error" in line
               for line in lines)
    assert any(line.startswith(f"{tmp_path}/d.yaml:1:") and "already served by" in line
               for line in lines)
    assert not any("c.yaml" in line for line in lines if not line.startswith(f"{tmp_path}/d"))


def test_check_json_output(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("steps: [{template: x}]\n")
    r = harkd("check", "--json", str(tmp_path / "a.yaml"))
    assert r.returncode == 78
    data = json.loads(r.stdout)
    assert data["errors"][0]["message"] == "the file is missing required key 'trigger'"


def test_check_validates_harkd_yaml(tmp_path: Path) -> None:
    (tmp_path / "harkd.yaml").write_text("server:\n  listen: nowhere\n  tokn: x\n")
    r = harkd("check", str(tmp_path / "harkd.yaml"))
    assert r.returncode == 78
    assert "harkd.yaml:2:11:" in r.stdout
    assert "did you mean 'token'" in r.stdout


def test_check_missing_and_non_yaml_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    r = harkd("check", str(tmp_path / "nope.yaml"), str(tmp_path / "notes.txt"))
    assert r.returncode == 78
    assert "no such file" in r.stdout and "not a pipeline file" in r.stdout


def test_invoke_runs_a_pipeline_in_process(tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(
        "trigger: {http: {}}\nsteps:\n  - template: '{{ {\"hi\": input.name} }}'\n")
    r = harkd("invoke", "hello", "--pipelines", str(tmp_path), "--input", '{"name": "Ada"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"hi": "Ada"}
    r = harkd("invoke", "hello", "--pipelines", str(tmp_path), "--input", "-",
              stdin='{"name": "Bo"}')
    assert json.loads(r.stdout) == {"hi": "Bo"}
    r = harkd("invoke", "nope", "--pipelines", str(tmp_path))
    assert r.returncode == 1 and "'nope' is not loadable" in r.stderr


def test_list_offline_and_schema(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("trigger: {http: {}}\nsteps: [{template: x}]\n")
    (tmp_path / "b.yaml").write_text("trigger: {}\nsteps: [{template: x}]\n")
    r = harkd("list", "--offline", "--json", "--pipelines", str(tmp_path))
    items = {p["name"]: p for p in json.loads(r.stdout)["pipelines"]}
    assert items["a"]["state"] == "active" and items["a"]["trigger"]["path"] == "/hooks/a"
    assert items["b"]["state"] == "rejected" and items["b"]["errors"]
    r = harkd("schema", "--kind", "pipeline")
    assert json.loads(r.stdout)["title"] == "harkd pipeline"


def test_version() -> None:
    r = harkd("--version")
    assert r.returncode == 0 and r.stdout.startswith("harkd ")


def test_check_does_not_import_heavy_libraries() -> None:
    code = ("import sys\nfrom harkd.cli import main\nrc = main(['check', 'pipelines'])\n"
            "heavy = [m for m in ('litellm', 'faster_whisper', 'piper', 'llama_cpp', "
            "'numpy', 'sounddevice', 'ctranslate2', 'onnxruntime') if m in sys.modules]\n"
            "print(rc, heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.stdout.strip() == "0 []", r.stdout + r.stderr


def test_check_knows_the_model_aliases_of_the_config(tmp_path: Path) -> None:
    (tmp_path / "harkd.yaml").write_text(
        "models:\n  smart: [{model: openai/gpt-x, api_base: 'http://127.0.0.1:9/v1'}]\n")
    pipes = tmp_path / "pipelines"
    pipes.mkdir()
    (pipes / "a.yaml").write_text("trigger: {http: {}}\nsteps:\n  - llm: {model: smrt}\n")
    (pipes / "b.yaml").write_text("trigger: {http: {}}\nsteps:\n  - llm: {model: smart}\n")
    r = harkd("check", cwd=tmp_path)
    assert r.returncode == 78
    assert "pipelines/a.yaml:3:18: unknown model alias 'smrt'; did you mean 'smart'?" in r.stdout
    assert "b.yaml" not in r.stdout


def test_list_and_runs_talk_to_the_running_daemon(tmp_path: Path) -> None:
    import time
    import urllib.request

    from harkd.testing import spawn_daemon

    ok = "trigger: {http: {}}\nsteps: [{template: 'ok {{ input }}'}]\n"
    bad = "trigger: {http: {}}\nsteps: [{template: '{{ input.nope }}'}]\n"
    with spawn_daemon(tmp_path, {"ok": ok, "bad": bad}) as s:
        for name in ("ok", "bad", "ok"):
            req = urllib.request.Request(s.url(f"/hooks/{name}"), data=b"{}",
                                         headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 422
        env = {"HARKD_LISTEN": s.base.removeprefix("http://")}
        listed = json.loads(harkd("list", "--json", cwd=tmp_path, env=env).stdout)
        assert listed["source"].startswith("daemon at")
        assert {p["name"] for p in listed["pipelines"]} == {"ok", "bad"}
        deadline = time.monotonic() + 10
        while True:  # the run log writes in the background
            r = harkd("runs", "--json", cwd=tmp_path, env=env)
            runs = json.loads(r.stdout)["runs"]
            if len(runs) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted((x["pipeline"], x["status"]) for x in runs) == [
            ("bad", "error"), ("ok", "ok"), ("ok", "ok")]
        r = harkd("runs", "bad", cwd=tmp_path, env=env)
        lines = r.stdout.strip().splitlines()
        assert r.returncode == 0 and len(lines) == 2  # the header and the one failed run
        assert "bad" in lines[1] and "error" in lines[1]
    r = harkd("runs", cwd=tmp_path, env=env)
    assert r.returncode == 69 and "harkd:" in r.stderr
