"""Conversation memory for ``llm`` steps with a ``session``: SQLite in the state folder.

Each session key (a rendered template, e.g. ``{{ trigger.headers['X-User'] }}``) holds the
user and assistant turns in order. A call sends the step's system prompt, then the newest
turns that fit the token budget, then the new message; so memory survives restarts and
never outgrows the model's context. One store per daemon (``services.shared``); in a
cluster (``cluster:`` in ``harkd.yaml``) the turns live in Redis (:func:`store_for`).

SQLite calls run on the event loop: they are sub-millisecond with WAL and
``synchronous=NORMAL``, cheaper than a thread hop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .router.backends import estimate_tokens

if TYPE_CHECKING:
    from .contracts import Services

SHARED_KEY = "sessions"
CLUSTER_KEY = "sessions_cluster"
DEFAULT_BUDGET = 2000
DEFAULT_KEEP = 200

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Conversation memory of llm steps with a session.",
    "additionalProperties": False,
    "properties": {
        "budget": {"type": "integer", "minimum": 1, "default": DEFAULT_BUDGET,
                   "description": "Tokens of history sent with each call (estimated)."},
        "keep": {"type": "integer", "minimum": 2, "default": DEFAULT_KEEP,
                 "description": "Messages stored per session; older ones are deleted."},
    },
}

_DDL = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session, id);
"""


class SessionStore:
    """The turns of every session, in ``STATE/sessions.sqlite3``."""

    def __init__(self, path: Path, *, budget: int = DEFAULT_BUDGET,
                 keep: int = DEFAULT_KEEP) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.budget = budget
        self.keep = keep
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_DDL)

    @classmethod
    def shared(cls, services: Services) -> SessionStore:
        """The daemon's store, opened on first use."""
        store = services.shared.get(SHARED_KEY)
        if store is None:
            conf: Mapping[str, Any] = services.settings.extra.get("sessions") or {}
            from .state import prepare

            store = cls(prepare(services.settings) / "sessions.sqlite3",
                        budget=int(conf.get("budget", DEFAULT_BUDGET)),
                        keep=int(conf.get("keep", DEFAULT_KEEP)))
            services.shared[SHARED_KEY] = store
        assert isinstance(store, SessionStore)
        return store

    def history(self, key: str, budget: int | None = None) -> list[dict[str, str]]:
        """The newest turns of ``key`` that fit ``budget`` tokens, oldest first, starting
        with a user turn."""
        rows = self._db.execute(
            "SELECT role, content, tokens FROM messages WHERE session = ? "
            "ORDER BY id DESC LIMIT ?", (key, self.keep)).fetchall()
        return newest(rows, self.budget if budget is None else budget)

    async def load(self, key: str, budget: int | None = None) -> list[dict[str, str]]:
        """:meth:`history`, as every session store offers it (see :func:`store_for`)."""
        return self.history(key, budget)

    async def save(self, key: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`append`, as every session store offers it."""
        self.append(key, messages)

    def append(self, key: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """Store turns (only their role and text) and drop what is over ``keep``."""
        now = time.time()
        rows = [(key, role, content, tokens, now) for role, content, tokens in turns(messages)]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO messages (session, role, content, tokens, created) "
                "VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "DELETE FROM messages WHERE session = ? AND id NOT IN (SELECT id FROM "
                "messages WHERE session = ? ORDER BY id DESC LIMIT ?)", (key, key, self.keep))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def clear(self, key: str) -> None:
        self._db.execute("DELETE FROM messages WHERE session = ?", (key,))

    def sessions(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT session FROM messages")]

    async def aclose(self) -> None:
        self._db.close()


class Sessions(Protocol):
    """What an ``llm`` step needs of a session store: this module's SQLite one, or the
    Redis one of a cluster (:mod:`harkd.cluster.sessions`)."""

    budget: int

    async def load(self, key: str, budget: int | None = None) -> list[dict[str, str]]: ...

    async def save(self, key: str, messages: Iterable[Mapping[str, Any]]) -> None: ...


def store_for(services: Services) -> Sessions:
    """The session store of this daemon: in Redis when it runs in a cluster (a daemon
    installs that one when it joins, :func:`harkd.cluster.sessions.install`)."""
    shared = services.shared.get(CLUSTER_KEY)
    if shared is not None:
        return shared  # type: ignore[no-any-return]
    return SessionStore.shared(services)


def newest(rows: Iterable[tuple[str, str, int]], budget: int) -> list[dict[str, str]]:
    """From turns newest first as (role, content, tokens): the newest that fit ``budget``
    tokens, oldest first, starting with a user turn."""
    left = budget
    picked: list[dict[str, str]] = []
    for role, content, tokens in rows:
        if tokens > left:
            break
        left -= tokens
        picked.append({"role": role, "content": content})
    picked.reverse()
    while picked and picked[0]["role"] != "user":
        picked.pop(0)
    return picked


def turns(messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """The stored form of messages: role, text and estimated tokens."""
    return [(str(m["role"]), str(m.get("content") or ""),
             4 + estimate_tokens(str(m.get("content") or ""))) for m in messages]


def fit(system: list[dict[str, Any]], history: list[dict[str, str]],
        new: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """System messages, then as much newest history as fits beside them, then ``new``."""
    used = sum(4 + estimate_tokens(str(m.get("content") or "")) for m in (*system, *new))
    left = budget - used
    kept: list[dict[str, str]] = []
    for m in reversed(history):
        cost = 4 + estimate_tokens(m["content"])
        if cost > left:
            break
        left -= cost
        kept.append(m)
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return [*system, *kept, *new]
