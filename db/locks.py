"""One job at a time per database: a second ``init``, bundle import or trade run waits for the first.

Two such commands at once would both read "not there yet" and both insert (a unique-constraint error
for the second, or two migrations racing). Serialising them is simpler and safer than retrying:
the second one waits, then finds the first one's work and adds nothing.

* SQLite: an OS file lock next to the database file (``<database>.<job>.lock``, via filelock);
* PostgreSQL: a session-level advisory lock keyed by the job's name;
* anything else: no lock (said in the docstring, not hidden).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Engine, text

DEFAULT_WAIT_S = 1800.0  # a bundle import or a rebalance takes minutes at most


class LockTimeoutError(RuntimeError):
    """Another process held the job's lock for longer than we were willing to wait."""


def _key(job: str) -> str:
    return hashlib.sha256(job.encode()).hexdigest()[:16]


def _say_on_stderr(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


@contextmanager
def exclusive(engine: Engine, job: str, *, wait_s: float = DEFAULT_WAIT_S, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock for ``job`` on ``engine``'s database; ``on_wait`` (default: a line on stderr) is told once
    if it has to wait."""
    if on_wait is None:
        on_wait = _say_on_stderr
    backend = engine.url.get_backend_name()
    database = engine.url.database or ""
    if backend == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        path = Path(database).expanduser()
        lock = FileLock(str(path.with_name(f"{path.name}.{_key(job)}.lock")))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            on_wait(f"waiting for another {job} on this database to finish")
            try:
                lock.acquire(timeout=wait_s)
            except Timeout:
                raise LockTimeoutError(f"another {job} on this database has been running for over {wait_s:.0f} s") from None
        try:
            yield
        finally:
            lock.release()
        return
    if backend == "postgresql":
        key = int(_key(job), 16) & 0x7FFFFFFFFFFFFFFF
        with engine.connect() as connection:
            if not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                on_wait(f"waiting for another {job} on this database to finish")
                connection.execute(text("SELECT set_config('lock_timeout', :t, false)"), {"t": f"{int(wait_s * 1000)}"})
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                connection.commit()
        return
    yield
