from __future__ import annotations

from pathlib import Path

import pytest

from harkd import config, settings
from harkd.errors import ConfigErrors
from harkd.secrets import REDACTOR


def test_defaults_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(None, {}, environ={})
    assert s.listen == "127.0.0.1:8420" and s.loopback and s.max_body == 1024 * 1024
    assert s.config_file is None and s.token is None


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "harkd.yaml"
    cfg.write_text("server: {listen: '127.0.0.1:1111', max_body: 10}\npipelines: pipes/\n"
                   "state: st/\nlog: {level: debug}\n")
    s = config.load(cfg, {}, environ={})
    assert s.listen == "127.0.0.1:1111" and s.max_body == 10 and s.log_level == "debug"
    assert s.pipelines == tmp_path / "pipes"  # relative to the config file
    s = config.load(cfg, {}, environ={"HARKD_LISTEN": "127.0.0.1:2222",
                                        "HARKD_MAX_BODY": "20"})
    assert s.listen == "127.0.0.1:2222" and s.max_body == 20
    s = config.load(cfg, {"listen": "127.0.0.1:3333"},
                      environ={"HARKD_LISTEN": "127.0.0.1:2222"})
    assert s.listen == "127.0.0.1:3333"


def test_config_found_through_env(tmp_path: Path) -> None:
    cfg = tmp_path / "other.yaml"
    cfg.write_text("server: {listen: '127.0.0.1:4444'}\n")
    assert config.load(None, {}, environ={"HARKD_CONFIG": str(cfg)}).listen.endswith("4444")


def test_env_substitution_and_secret_redaction(tmp_path: Path) -> None:
    cfg = tmp_path / "harkd.yaml"
    cfg.write_text("server: {token: '${env:MY_TOKEN}'}\nmodels:\n  smart:\n"
                   "    - {model: openai/gpt-x, api_key: '${env:MY_KEY:-sk-default-abc}'}\n")
    s = config.load(cfg, {}, environ={"MY_TOKEN": "tok-very-secret"})
    assert s.token == "tok-very-secret"
    assert s.models["smart"][0]["api_key"] == "sk-default-abc"
    assert REDACTOR("the key sk-default-abc and tok-very-secret") == "the key *** and ***"


def test_bad_config_has_positions(tmp_path: Path) -> None:
    cfg = tmp_path / "harkd.yaml"
    cfg.write_text("server:\n  listen: 8420\nmodels:\n  a: []\n")
    with pytest.raises(ConfigErrors) as info:
        config.load(cfg, {}, environ={})
    lines = sorted(e.line for e in info.value.errors)
    assert lines == [2, 4], [str(e) for e in info.value.errors]


def test_unset_env_in_config(tmp_path: Path) -> None:
    cfg = tmp_path / "harkd.yaml"
    cfg.write_text("server: {token: '${env:NOT_SET_ANYWHERE}'}\n")
    with pytest.raises(ConfigErrors, match="NOT_SET_ANYWHERE is not set"):
        config.load(cfg, {}, environ={})


def test_settings_table_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for s in settings.TABLE:
        assert f"`{s.key}`" in readme, f"README does not document {s.key}"
        assert s.env in readme, f"README does not name {s.env}"


def test_substitution_reaches_every_string_and_leaves_a_plain_document_alone() -> None:
    from harkd.secrets import substitute
    from harkd.yamlfile import Positions

    plain = {"steps": [{"template": "hi {{ input }}"}, {"http": {"url": "x", "n": 1}}]}
    assert substitute(plain, Positions("p.yaml"), {})[0] is plain
    deep = {"steps": [{"http": {"headers": [{"a": "$${env:A}"}, "k ${env:A} ${env:B:-b}"]}}]}
    out, errors = substitute(deep, Positions("p.yaml"), {"A": "1"})
    assert errors == []
    assert out == {"steps": [{"http": {"headers": [{"a": "${env:A}"}, "k 1 b"]}}]}
    _, errors = substitute({"x": [[["${env:NOPE}"]]]}, Positions("p.yaml"), {})
    assert [e.message for e in errors] == [
        "environment variable NOPE is not set (write ${env:NOPE:-default} to give a default)"]
