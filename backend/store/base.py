"""One MetaData for every table, and the engine: SQLite (WAL) by default, PostgreSQL via DATABASE_URL."""

from __future__ import annotations

import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

metadata = MetaData()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    ensure_tables(engine, metadata.sorted_tables)
    add_missing_columns(engine, metadata)
    _fresh_pool_after_fork(engine)
    return engine


def ensure_tables(engine: Engine, tables: list[Table]) -> None:
    """Create the missing tables. Several processes may do it at once on a fresh database (gunicorn workers, rq
    workers): PostgreSQL then refuses the second CREATE TABLE with a duplicate type, which is not an error here
    once the table is there."""
    for attempt in range(3):
        try:
            tables[0].metadata.create_all(engine, tables=tables)
            return
        except DBAPIError:
            have = set(inspect(engine).get_table_names())
            if all(t.name in have for t in tables):
                return
            if attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))


def _fresh_pool_after_fork(engine: Engine) -> None:
    """gunicorn forks its workers after the app (and this engine) is built: a child that reused the parent's pooled
    connections would share their sockets with its siblings, and PostgreSQL answers get crossed. The child drops
    them (without closing the parent's) and opens its own."""
    ref = weakref.ref(engine)

    def after_fork() -> None:
        forked = ref()
        if forked is not None:
            forked.dispose(close=False)

    os.register_at_fork(after_in_child=after_fork)


def add_missing_columns(engine: Engine, meta: MetaData) -> None:
    """Columns added to a table after a database was made: added as nullable, so older databases keep working."""
    found = inspect(engine)
    for table in meta.sorted_tables:
        if not found.has_table(table.name):
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            kind = column.type.compile(engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            log.info("added column %s.%s to an older database", table.name, column.name)
        have_indexes = {i["name"] for i in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have_indexes:
                try:
                    index.create(engine)
                except DBAPIError as exc:  # rows from before it break it (two waiting jobs): said, not fatal
                    log.warning("index %s not added to an older database: %s", index.name, type(exc).__name__)
