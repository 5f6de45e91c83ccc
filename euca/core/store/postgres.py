"""The state store on PostgreSQL (`store.url = "postgresql://..."`): the same interface as SQLite's.

The driver is psycopg 3 (its sync API in the store's worker threads, as sqlite3 is). What differs, and how:

- Placeholders: callers write `?`; each statement is translated once (cached) to psycopg's `%s`, literal
  `%` doubled, `?` inside literals and comments left alone. The same pass quotes the column name `user`
  (PostgreSQL reads a bare `user` as CURRENT_USER), maps `instr(` to `strpos(` (same arguments), a blob
  literal x'..' to bytea and `COLLATE BINARY` to `COLLATE "C"`. SQLite's json_extract (object paths) is a
  function the store creates.
- Migrations' DDL is written for SQLite and never edited once released, so its column types are mapped
  when a step runs here: INTEGER -> BIGINT (SQLite integers are 64-bit), `INTEGER PRIMARY KEY
  [AUTOINCREMENT]` -> an identity column (SQLite's rowid alias: a NULL or missing value takes the next
  number), REAL -> DOUBLE PRECISION, BLOB -> BYTEA, TEXT -> TEXT COLLATE "C" (SQLite compares and sorts
  text bytewise; a database's default collation may not); COLLATE NOCASE names an ICU collation the store
  creates; foreign keys become DEFERRABLE, so `PRAGMA defer_foreign_keys=ON` can be SET CONSTRAINTS ALL
  DEFERRED. DML needs no such mapping: callers write the
  subset both engines take (ON CONFLICT upserts, RETURNING, no INSERT OR IGNORE/REPLACE).
- Rows behave as sqlite3.Row does where callers use them (index and name access, keys(), iteration);
  Python bools are sent as integers (the SQLite schema keeps flags in INTEGER columns) and NUMERIC results
  (SUM of BIGINTs) come back as int, or float when fractional, as SQLite's do.
- One writer: SQLite's write transactions are BEGIN IMMEDIATE (one writer at a time across every process
  on the file), and the records modules rely on it (read, decide, write, with nothing between). Here each
  write transaction first takes one transaction-level advisory lock (`WRITE_LOCK`), so write transactions
  are serialised across every process that shares the database (walrus workers, several CLCs), and each
  statement after the lock sees every commit before it (READ COMMITTED). Reads run in REPEATABLE READ READ
  ONLY transactions: a consistent snapshot, never blocked by a writer, as SQLite's WAL readers.
- Changes other hosts cache: the names units announce (`Tx.announce`) go out as NOTIFYs in the round trip
  of the COMMIT (only for units that stand); `watch` hears other stores' through one LISTENing connection
  (listen.py).
- Durability: a batch with a `durable` unit commits with synchronous_commit on (the commit is on disk
  before the callers hear back); the others, at `store.synchronous` NORMAL (the default), with it off: a
  crash of the database server may lose the last moments of them, never consistency, as SQLite's NORMAL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import psycopg.adapt
import psycopg.pq

from euca.core.store import Params, Store, Tx, _split_sql, _WriteJob, listen

log = logging.getLogger("euca.store")

T = TypeVar("T")

# The advisory lock every write transaction takes (any constant: it names the store's one writer slot).
WRITE_LOCK = 0x6575636153544F52  # "eucaSTOR"


# -- rows ------------------------------------------------------------------------------------------


class PgRow:
    """One result row, as sqlite3.Row: by index, by column name (case-insensitively), keys(), iteration."""

    __slots__ = ("_values", "_names", "_index")

    def __init__(self, values: Sequence[Any], names: tuple[str, ...], index: dict[str, int]):
        self._values = tuple(values)
        self._names = names
        self._index = index

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key]]
            except KeyError:
                try:
                    return self._values[self._index[key.lower()]]
                except KeyError:
                    raise IndexError("No item with that key") from None
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PgRow):
            return self._names == other._names and self._values == other._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._names, self._values))

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))!r})"


_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], PgRow]:
    names = tuple(c.name for c in cursor.description or ())
    index = _INDEXES.get(names)
    if index is None:
        index = {}
        for i, name in reversed(list(enumerate(names))):  # the first of two equal names wins, as in SQLite
            index[name] = i
            index.setdefault(name.lower(), i)
        if len(_INDEXES) < 4096:
            _INDEXES[names] = index

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, names, index)

    return make


# -- values ------------------------------------------------------------------------------------------


class _BoolAsInteger(psycopg.adapt.Dumper):
    """True/False as 1/0: the schema keeps flags in INTEGER columns, as SQLite stores Python bools."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericAsNumber(psycopg.adapt.Loader):
    """NUMERIC (what SUM of BIGINTs gives) as int, or float when fractional: SQLite's SUM and AVG types."""

    def load(self, data: Any) -> Any:
        d = Decimal(bytes(data).decode())
        return int(d) if d == d.to_integral_value() else float(d)


# -- SQL ---------------------------------------------------------------------------------------------

# A literal ('..', with '' inside), a quoted name ("..."), a comment (-- to the line's end, /* */), a blob
# literal (x'..'), a word, or any one other character.
_TOKEN = re.compile(
    r"""(?P<blob>[xX]'[0-9A-Fa-f]*')"""
    r"""|(?P<literal>'(?:[^']|'')*')"""
    r"""|(?P<quoted>"(?:[^"]|"")*")"""
    r"""|(?P<comment>--[^\n]*|/\*.*?\*/)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)"""
    r"""|(?P<other>.)""",
    re.DOTALL,
)

_DDL_TYPES = [
    (
        re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    # A column with a collation of its own (COLLATE NOCASE) keeps it; every other compares bytewise.
    (re.compile(r"\bTEXT\b(?![^,()]*\bCOLLATE\b)"), 'TEXT COLLATE "C"'),
    # Foreign keys may be deferred to the commit (PRAGMA defer_foreign_keys, below) only if declared so.
    (
        re.compile(
            r"(\bREFERENCES\s+\w+\s*(?:\([^)]*\))?"
            r"(?:\s+ON\s+(?:DELETE|UPDATE)\s+(?:CASCADE|RESTRICT|SET\s+NULL|SET\s+DEFAULT|NO\s+ACTION))*)"
        ),
        r"\1 DEFERRABLE INITIALLY IMMEDIATE",
    ),
]

# SQLite's case-insensitive collation, as PostgreSQL's ICU makes it (created by the store at start): equal
# and unique ignoring case; it sorts as ICU's root locale does, which orders punctuation differently.
NOCASE_COLLATION = "CREATE COLLATION IF NOT EXISTS nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"

# SQLite's json_extract(doc, '$.a.b') for the object paths callers use (no array indices), as a function
# the store creates: the value at that path as text (NULL where there is none).
JSON_EXTRACT_FUNCTION = (
    "CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE sql IMMUTABLE AS "
    "$$ SELECT CASE WHEN path = '$' THEN doc ELSE (doc::jsonb) #>> string_to_array(substr(path, 3), '.') END $$"
)

# The one PRAGMA the roles send, and what it is here (both last until the transaction ends).
_PRAGMAS = {
    "pragma defer_foreign_keys=on": "SET CONSTRAINTS ALL DEFERRED",
    "pragma defer_foreign_keys=off": "SET CONSTRAINTS ALL IMMEDIATE",
}


def translate(sql: str, *, placeholders: bool = True, ddl: bool = False) -> str:
    """SQL as callers write it for both engines -> as psycopg sends it to PostgreSQL (see the module doc).

    `placeholders`: `?` -> `%s` and `%` -> `%%` (a statement sent with parameters); `ddl`: a migration's
    column types mapped (comments dropped)."""
    pragma = _PRAGMAS.get(" ".join(sql.replace("=", " = ").split()).lower().replace(" = ", "=").rstrip(";"))
    if pragma is not None:
        return pragma
    out: list[str] = []
    code: list[str] = []  # the current run of plain code, where DDL types are mapped

    def flush() -> None:
        if code:
            text = "".join(code)
            if ddl:
                for pattern, replacement in _DDL_TYPES:
                    text = pattern.sub(replacement, text)
            out.append(text)
            code.clear()

    tokens = list(_TOKEN.finditer(sql))
    for i, m in enumerate(tokens):
        kind, text = m.lastgroup, m.group()
        if kind == "word":
            low = text.lower()
            if low == "user":
                text = '"user"'
            elif low == "instr" and _next_significant(tokens, i) == "(":
                text = "strpos"
            elif low == "binary" and _previous_significant(tokens, i).lower() == "collate":
                text = '"C"'  # SQLite's bytewise collation
            code.append(text)
        elif kind == "other":
            if placeholders and text == "?":
                text = "%s"
            elif placeholders and text == "%":
                text = "%%"
            code.append(text)
        else:
            flush()
            if kind == "comment":
                if ddl:
                    continue
            elif kind == "blob":
                text = f"'\\x{text[2:-1]}'::bytea"
            if placeholders:
                text = text.replace("%", "%%")
            out.append(text)
    flush()
    return "".join(out)


def _next_significant(tokens: list[re.Match[str]], i: int) -> str:
    for m in tokens[i + 1 :]:
        if not m.group().isspace():
            return m.group()
    return ""


def _previous_significant(tokens: list[re.Match[str]], i: int) -> str:
    for m in reversed(tokens[:i]):
        if not m.group().isspace():
            return m.group()
    return ""


_TRANSLATED: dict[str, str] = {}


def _sql(sql: str) -> str:
    """`translate(sql)`, cached: statements are a few hundred constant strings (and some built per call)."""
    done = _TRANSLATED.get(sql)
    if done is None:
        done = translate(sql)
        if len(_TRANSLATED) < 10000:
            _TRANSLATED[sql] = done
    return done


def _params(params: Params) -> Params:
    return params if isinstance(params, dict) else tuple(params)


# -- the store -----------------------------------------------------------------------------------------


class PgTx(Tx):
    """One unit of work on one PostgreSQL connection."""

    __slots__ = ("_pg", "announced")

    def __init__(self, conn: psycopg.Connection[PgRow]):
        self._pg = conn
        self.announced: set[str] = set()

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._pg.execute(_sql(sql), _params(params)).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with self._pg.cursor() as cur:
            cur.executemany(_sql(sql), [_params(r) for r in rows])

    def one(self, sql: str, params: Params = ()) -> Any:
        return self._pg.execute(_sql(sql), _params(params)).fetchone()

    def all(self, sql: str, params: Params = ()) -> Any:
        return self._pg.execute(_sql(sql), _params(params)).fetchall()

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._pg.execute(_sql(sql), _params(params)).fetchone()
        return None if row is None else row[0]

    def table_exists(self, name: str) -> bool:
        return self.scalar("SELECT to_regclass(?) IS NOT NULL", (name,)) is True

    def announce(self, name: str) -> None:
        self.announced.add(listen.check_name(name))


class PgStore(Store):
    """The Store on PostgreSQL: one writer connection (group commit, as SQLite's), a pool of readers."""

    def __init__(
        self, url: str, *, synchronous: str = "NORMAL", readers: int = 4, local_dir: Path | None = None
    ):
        # No super().__init__: that opens a SQLite file. The queue and the pools are the shared part.
        # `path` is where files that go with the store live on this host (SQLite's are beside its file):
        # identity's change counter, which the processes of one host map. Without a local directory there
        # is none, and such counters stay in the process (":memory:", as for an in-memory SQLite store).
        if local_dir is not None:
            local_dir.mkdir(parents=True, exist_ok=True)
        self.path = str(local_dir / "postgresql") if local_dir is not None else ":memory:"
        self.url = url
        self.synchronous = synchronous.upper()
        # Changes announced by writes through this store object, and heard from others (listen.py).
        self.origin = listen.new_origin()
        self._listener: listen.Listener | None = None
        self._init_queues(readers)
        self._pg_readers: list[psycopg.Connection[PgRow]] = []
        self._pg_writer = self._pg_connect()
        self._in_write_tx(
            lambda conn: conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                '(namespace TEXT COLLATE "C" PRIMARY KEY, version BIGINT NOT NULL); '
                + NOCASE_COLLATION
                + "; "
                + JSON_EXTRACT_FUNCTION
            )
        )

    def _pg_connect(self) -> psycopg.Connection[PgRow]:
        conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
        conn.adapters.register_dumper(bool, _BoolAsInteger)
        conn.adapters.register_loader("numeric", _NumericAsNumber)
        return conn

    def _writer_conn(self) -> psycopg.Connection[PgRow]:
        if self._pg_writer.closed or self._pg_writer.broken:
            log.warning("store reconnecting to PostgreSQL (the writer connection was lost)")
            self._pg_writer = self._pg_connect()
        return self._pg_writer

    def _begin_write(self, conn: psycopg.Connection[PgRow], durable: bool) -> None:
        # One round trip: the statements go as one simple query.
        lazy = not durable and self.synchronous not in ("FULL", "EXTRA")
        conn.execute(
            "BEGIN ISOLATION LEVEL READ COMMITTED; "
            + ("SET LOCAL synchronous_commit = off; " if lazy else "")
            + f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        )

    def _in_write_tx(self, fn: Callable[[psycopg.Connection[PgRow]], T], durable: bool = True) -> T:
        with self._writer_lock:
            conn = self._writer_conn()
            self._begin_write(conn, durable)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                _rollback(conn)
                raise

    # -- schema -------------------------------------------------------------------------------

    def migrate(self, namespace: str, steps: Sequence[str | Callable[[Tx], None]]) -> None:
        def run(conn: psycopg.Connection[PgRow]) -> None:
            tx = PgTx(conn)
            done = tx.scalar("SELECT version FROM schema_migrations WHERE namespace=?", (namespace,)) or 0
            for i, step in enumerate(steps[done:], start=done + 1):
                if callable(step):
                    step(tx)
                else:
                    for statement in _split_sql(step):
                        conn.execute(cast(Any, translate(statement, placeholders=False, ddl=True)))
                log.info("store migrated namespace=%s version=%d", namespace, i)
            if len(steps) > done:
                tx.execute(
                    "INSERT INTO schema_migrations(namespace, version) VALUES(?, ?) "
                    "ON CONFLICT(namespace) DO UPDATE SET version=excluded.version",
                    (namespace, len(steps)),
                )

        self._in_write_tx(run)

    # -- work ---------------------------------------------------------------------------------

    def _run_batch(self, batch: list[_WriteJob[Any]]) -> None:
        with self._writer_lock:
            try:
                conn = self._writer_conn()
                self._begin_write(conn, any(j.durable for j in batch))
            except BaseException as e:
                for job in batch:
                    job.result, job.error = None, e
                return
            try:
                announced: set[str] = set()  # by the units that stand
                if len(batch) == 1:
                    tx = PgTx(conn)
                    batch[0].result = batch[0].fn(tx)
                    announced |= tx.announced
                else:
                    for job in batch:
                        conn.execute("SAVEPOINT unit")
                        tx = PgTx(conn)
                        try:
                            job.result = job.fn(tx)
                            announced |= tx.announced
                        except Exception as e:
                            job.error = e
                            conn.execute("ROLLBACK TO SAVEPOINT unit")
                        conn.execute("RELEASE SAVEPOINT unit")
                if announced:
                    # The notices go with the COMMIT, in one round trip: sent if and when it commits.
                    conn.execute(cast(Any, listen.notify_sql(announced, self.origin) + "; COMMIT"))
                else:
                    conn.execute("COMMIT")
            except BaseException as e:
                _rollback(conn)
                for job in batch:
                    if job.error is None:
                        job.result = None
                        job.error = e

    def watch(self, name: str) -> listen.Watch:
        with self._readers_lock:
            if self._listener is None:
                self._listener = listen.Listener(self.url, self.origin)
                if self._closed:
                    # Closed: a watch that never listens (always "changed"), not a thread nobody stops.
                    self._listener.stop()
            listener = self._listener
        return listener.watch(name)

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        conn = self._take_pg_reader()
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                result = fn(PgTx(conn))
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
            return result
        finally:
            self._give_pg_reader(conn)

    def _take_pg_reader(self) -> psycopg.Connection[PgRow]:
        with self._readers_lock:
            while self._pg_readers:
                conn = self._pg_readers.pop()
                if not (conn.closed or conn.broken):
                    return conn
        return self._pg_connect()

    def _give_pg_reader(self, conn: psycopg.Connection[PgRow]) -> None:
        with self._readers_lock:
            usable = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if not self._closed and usable and not conn.broken:
                self._pg_readers.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers, self._pg_readers = self._pg_readers, []
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        for conn in readers:
            conn.close()
        with self._writer_lock:
            self._pg_writer.close()


def _rollback(conn: psycopg.Connection[PgRow]) -> None:
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")
