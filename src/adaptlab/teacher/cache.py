"""A persistent SQLite cache of teacher answers, so a rerun never pays twice for the same question.

Teacher calls cost money and minutes; generation runs get interrupted (Ctrl-C, a lost VM, a
budget limit). Every answer is therefore committed the moment it arrives, keyed by
:func:`adaptlab.teacher.base.cache_key` (sha256 of backend, model and the request hash), and a rerun
with the same prompts sends only what is missing.

Why SQLite: one file, atomic commits, safe for several processes at once, readable with the
``sqlite3`` shell. The database runs in WAL journal mode and every :meth:`ResponseCache.put`
commits, so a SIGKILL loses at most the answer in flight. Rows keep the request itself (its hashed
fields as JSON) beside the response, so a cache can be inspected or turned into a cassette; there
are no HTTP headers in a request, hence no API keys on disk.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from types import TracebackType

from adaptlab.teacher.base import TeacherError, TeacherRequest, TeacherResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request_json TEXT NOT NULL,
    response_json TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
_BUSY_TIMEOUT_S = 30.0  # another process holding the write lock: wait this long before failing


class ResponseCache:
    """Teacher answers stored in the SQLite file at ``path`` (created with its parent directories)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise TeacherError(
                f"teacher cache {self.path} is not a readable SQLite database ({exc}). "
                "Delete or move that file (a new cache is created in its place), "
                "or point teacher.cache_path somewhere else."
            ) from None

    def get(self, key: str) -> TeacherResponse | None:
        row = self._connection().execute("SELECT response_json FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return TeacherResponse.from_json(json.loads(row[0]))

    def put(self, key: str, backend: str, model: str, request: TeacherRequest, response: TeacherResponse) -> None:
        """Store (or replace) one answer and commit at once."""
        conn = self._connection()
        conn.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                backend,
                model,
                request.hash,
                json.dumps(request.hashed_fields(), ensure_ascii=False, sort_keys=True),
                json.dumps(response.to_json(), ensure_ascii=False),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            ),
        )
        conn.commit()

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"teacher cache {self.path} is closed")
        return self._conn
