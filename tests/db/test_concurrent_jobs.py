"""Two of the same job at once on one database: the second waits for the first, then adds nothing.

Threads are enough to test it: the SQLite job lock is an OS file lock, and two opens of the lock file
conflict whether they come from two processes or two threads.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from advisor.config import Settings
from advisor.data.importer import import_bundle
from advisor.runtime import Runtime
from db.engine import make_engine, make_session_factory
from db.locks import exclusive
from db.migrate import current_revision, head_revision
from db.models import Company, DailyBar, TextItem


def run_together(*jobs) -> list[BaseException]:  # type: ignore[no-untyped-def]
    """Run the callables at the same time; the errors they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return errors


def test_a_job_lock_lets_one_holder_in_at_a_time(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    inside, most = [0], [0]
    lock = threading.Lock()
    waits: list[str] = []

    def job() -> None:
        with exclusive(engine, "test job", on_wait=waits.append):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            threading.Event().wait(0.2)
            with lock:
                inside[0] -= 1

    assert run_together(job, job, job) == []
    assert most[0] == 1 and waits and "waiting for another test job" in waits[0]


def test_two_inits_on_an_empty_database_both_succeed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'fresh.db'}")
    first, second = Runtime(settings), Runtime(settings)
    assert run_together(first.init_database, second.init_database) == []
    assert current_revision(first.engine) == head_revision()


def test_two_imports_of_one_bundle_at_once_store_it_once(sqlite_factory, synthetic_bundle: Path) -> None:
    engine = sqlite_factory.kw["bind"]
    other = make_session_factory(make_engine(str(engine.url)))
    errors = run_together(lambda: import_bundle(sqlite_factory, synthetic_bundle, progress=False),
                       lambda: import_bundle(other, synthetic_bundle, progress=False))
    assert errors == []
    alone = make_session_factory(make_engine(f"sqlite:///{synthetic_bundle.parent / 'alone.db'}"))
    from db.migrate import upgrade

    upgrade(alone.kw["bind"])
    import_bundle(alone, synthetic_bundle, progress=False)
    with sqlite_factory() as together_session, alone() as alone_session:
        for model in (Company, DailyBar, TextItem):
            count = select(func.count()).select_from(model)
            assert together_session.scalar(count) == alone_session.scalar(count)

