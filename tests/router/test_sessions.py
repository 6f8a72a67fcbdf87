"""Session memory: trimmed to a budget, newest turns kept, stored across reopenings."""

from __future__ import annotations

from pathlib import Path

from harkd.sessions import SessionStore, fit


def test_history_keeps_newest_turns_within_budget(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.sqlite3", keep=6)
    for i in range(5):
        store.append("k", [{"role": "user", "content": f"q{i} " + "x" * 36},
                           {"role": "assistant", "content": f"a{i} " + "y" * 36}])
    store.append("other", [{"role": "user", "content": "unrelated"}])
    everything = store.history("k", budget=10_000)
    assert len(everything) == 6  # keep=6 dropped the oldest
    assert everything[0]["content"].startswith("q2")
    few = store.history("k", budget=30)
    assert [m["content"][:2] for m in few] == ["q4", "a4"]
    assert store.history("nobody") == []


def test_store_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SessionStore(path)
    store.append("k", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    store._db.close()
    again = SessionStore(path)
    assert again.history("k") == [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "yo"}]
    assert again.sessions() == ["k"]


def test_fit_keeps_system_and_new_message() -> None:
    system = [{"role": "system", "content": "s" * 40}]
    new = [{"role": "user", "content": "now"}]
    history = [{"role": "user", "content": "old " * 20}, {"role": "assistant", "content": "a"},
               {"role": "user", "content": "recent"}, {"role": "assistant", "content": "b"}]
    out = fit(system, history, new, budget=40)
    assert out[0] == system[0] and out[-1] == new[0]
    assert [m["content"] for m in out[1:-1]] == ["recent", "b"]
    assert fit(system, history, new, budget=1) == [*system, *new]
