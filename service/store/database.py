"""The two databases a store can live in, behind one small interface: SQLite and PostgreSQL.

SQL is written once, with `?` placeholders and standard types; PostgreSQL's driver gets
`%s`. Each thread has its own connection (SQLite's and psycopg's connections are not for
sharing across threads), opened on first use, so nothing is opened before gunicorn forks.
"""

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from service.store.schema import MIGRATIONS, SCHEMA_VERSION

SQLITE_FILE = "predictions.sqlite3"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# How long a writer waits for another process's write lock before giving up on a batch.
BUSY_TIMEOUT_SECONDS = 5.0
# What a prediction row costs in PostgreSQL, for the quota there (rows, index entries).
POSTGRES_ROW_BYTES = 400
# Any fixed number: the advisory lock that lets one process at a time migrate PostgreSQL.
MIGRATION_LOCK = 360036


class StoreUnavailableError(Exception):
    """The database cannot be opened, read or written now (down, locked, full, read-only)."""


class StoreSchemaError(Exception):
    """The database was written by a newer version of this code."""


class Session:
    """One transaction's statements, in the `?` placeholder style."""

    def __init__(self, cursor, postgres: bool):
        self._cursor = cursor
        self._postgres = postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._postgres else sql

    def run(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        """Run one statement; its rows, if it returns any."""
        self._cursor.execute(self._sql(sql), tuple(parameters))
        return self._cursor.fetchall() if self._cursor.description else []

    def run_many(self, sql: str, rows: Sequence[Sequence]) -> None:
        """Run one statement for each row of parameters."""
        if rows:
            self._cursor.executemany(self._sql(sql), [tuple(row) for row in rows])

    @property
    def changed(self) -> int:
        """Rows the last statement inserted, updated or deleted."""
        return self._cursor.rowcount


class Database:
    """A store's database: a SQLite file in a folder, or PostgreSQL at a URL."""

    def __init__(self, target: str):
        self.postgres = target.startswith(POSTGRES_SCHEMES)
        self.target = target
        self._local = threading.local()
        self._migrated = False
        self._migrating = threading.Lock()

    @property
    def where(self) -> str:
        """Where the data is, for messages: the SQLite file, or PostgreSQL without credentials."""
        if self.postgres:
            return "PostgreSQL at " + self.target.rpartition("@")[2].split("?")[0]
        return os.path.join(self.target, SQLITE_FILE)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction on this thread's connection; StoreUnavailableError if it fails."""
        connection = self._connection()
        try:
            if self.postgres:
                with connection.transaction(), connection.cursor() as cursor:
                    yield Session(cursor, True)
            else:
                cursor = connection.cursor()
                # IMMEDIATE: take the write lock now, so two writers wait (busy timeout)
                # instead of one failing when it upgrades from reading.
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield Session(cursor, False)
                except BaseException:
                    connection.rollback()
                    raise
                connection.commit()
        except (sqlite3.Error, *self._postgres_errors()) as error:
            self._drop_connection()
            raise StoreUnavailableError(f"{self.where}: {_first_line(error)}") from None

    def used_bytes(self) -> int:
        """What the store takes, for the quota: SQLite's pages in use, or in PostgreSQL the
        kept images' bytes plus an estimate per prediction row."""
        with self.transaction() as session:
            if self.postgres:
                images = session.run("SELECT COALESCE(SUM(size), 0) FROM images")[0][0]
                rows = session.run("SELECT COUNT(*) FROM predictions")[0][0]
                return int(images) + int(rows) * POSTGRES_ROW_BYTES
            pages = session.run("PRAGMA page_count")[0][0]
            free = session.run("PRAGMA freelist_count")[0][0]
            return (pages - free) * session.run("PRAGMA page_size")[0][0]

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = self._open()
            except (sqlite3.Error, OSError, *self._postgres_errors()) as error:
                raise StoreUnavailableError(f"{self.where}: {_first_line(error)}") from None
            self._local.connection = connection
            with self._migrating:
                if not self._migrated:
                    self._migrate(connection)
                    self._migrated = True
        return connection

    def _open(self):
        if self.postgres:
            import psycopg  # only stores in PostgreSQL need the driver loaded

            return psycopg.connect(self.target, connect_timeout=int(BUSY_TIMEOUT_SECONDS))
        os.makedirs(self.target, exist_ok=True)
        connection = sqlite3.connect(self.where, timeout=BUSY_TIMEOUT_SECONDS,
                                     isolation_level=None, check_same_thread=True)
        # WAL: readers never wait for the writer, and every process on this host shares one
        # file safely (not on a network file system: its locks do not hold there).
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _migrate(self, connection) -> None:
        """Bring the schema up to SCHEMA_VERSION; one process at a time does it."""
        try:
            with self.transaction() as session:
                if self.postgres:
                    session.run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                session.run("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                found = session.run("SELECT version FROM schema_version")
                current = found[0][0] if found else 0
                if current > SCHEMA_VERSION:
                    raise StoreSchemaError(
                        f"{self.where} has schema version {current}; this service knows up to "
                        f"{SCHEMA_VERSION}: run the newer service, or start a new store")
                blob = "BYTEA" if self.postgres else "BLOB"
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version]:
                        session.run(statement.format(blob=blob))
                if not found:
                    session.run("INSERT INTO schema_version (version) VALUES (?)",
                                (SCHEMA_VERSION,))
                elif current != SCHEMA_VERSION:
                    session.run("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _postgres_errors(self) -> tuple:
        if not self.postgres:
            return ()
        import psycopg

        return (psycopg.Error,)

    def close(self) -> None:
        """Close this thread's connection."""
        self._drop_connection()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
