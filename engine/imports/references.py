"""Set-based reference checks for the direct-COPY path of clean batches.

PostgreSQL checks a foreign key with one trigger call per inserted row (a ``SELECT … FOR KEY
SHARE`` of the parent each). For 1,000,000 comments with two FKs that is over half of ``\\copy``'s
time (measured on the bench server: 18.1 s with the FK triggers, 8.0 s without them).

For a clean batch the same work is done once per batch, and off the writer's critical path:

1. the batch's distinct referenced ids go into a temp table (binary COPY);
2. one statement per reference locks the parents ``FOR KEY SHARE`` (the very lock the FK
   trigger takes) and counts them: fewer rows than ids means a reference is missing, and the
   batch goes on to the loader's other paths, whose classification reports each such row;
3. in that same transaction, on that same connection, the loader then takes the table's
   ``ROW EXCLUSIVE`` lock, checks again that skipping triggers is safe (:func:`recheck`), COPYs
   the batch with ``session_replication_role = replica`` (``SET LOCAL`` around the COPY alone),
   which skips the per-row FK triggers, writes the error rows and the checkpoint, and commits.

The parents' locks and the rows therefore commit or vanish together: a concurrent ``DELETE`` (or
key update) of a locked parent waits for that transaction and then its own FK check sees the new
rows and fails — the guarantee the triggers give. If the connection ends before the commit (its
idle-in-transaction timeout, ``pg_terminate_backend``, a dropped network), its locks go, but so
does the batch: the COPY or the COMMIT fails, and the loader applies the batch on its own
connection by the other paths (FK triggers or classification). There is no moment at which rows
are committed without their parents locked (locks held by another transaction, meant to end
after the batch's, would not do: a connection can end at any moment).

Locking is half of the cost (``EXPLAIN (ANALYZE, BUFFERS, WAL)``: a row lock writes a WAL record,
and the first one on a page after a checkpoint a full-page image), so :class:`ReferenceLocker`
takes batch N+1's locks on a connection of its own, in the reading thread, while batch N is
being written on the connection that locked it.

Skipping triggers is only safe when the table's only INSERT triggers are the check triggers of
foreign keys checked here: ``session_replication_role = replica`` skips every ordinary and
internal trigger, including the rechecks of DEFERRABLE unique and exclusion constraints (their
index defers the check to a trigger). :func:`probe` verifies that in the catalog at a job's
start (and that the role may set ``session_replication_role``: a superuser, or on PostgreSQL 15+
``GRANT SET ON PARAMETER session_replication_role``); :func:`recheck` verifies it again in every
direct-COPY transaction after ``LOCK TABLE … IN ROW EXCLUSIVE MODE``, which conflicts with
``CREATE TRIGGER``, ``CREATE RULE`` and ``ADD CONSTRAINT``, so nothing can be added between the
check and the commit; a table that changed mid-job is written with its triggers from then on.
Results are identical either way, only the speed differs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import adbc_driver_manager
import polars as pl
import pyarrow as pa

from engine.resources import Resource

log = logging.getLogger(__name__)

#: ``BULKIO_REFERENCE_CHECKS`` values: ``auto`` uses set-based checks where :func:`probe` allows
#: them, ``triggers`` always leaves the checks to PostgreSQL's per-row FK triggers.
MODES = ("auto", "triggers")

#: What ``session_replication_role = replica`` would skip besides the FK checks done here, in
#: one catalog query: deferrable unique/exclusion constraints (their index leaves the check to
#: an internal trigger), triggers and rules of the table's own, other internal INSERT triggers
#: (``tgtype & 4``: fires on INSERT; an FK's check triggers belong to a constraint of this table
#: with contype 'f', the referenced side's action triggers fire only on UPDATE/DELETE), and the
#: first foreign key that is not one of ``$known`` (``column=parent`` of single-column FKs to
#: ``parent.id``). ``{known}`` comes from the resource declaration, never from input.
_UNSAFE = """
SELECT
  (SELECT string_agg(conname, ', ' ORDER BY conname) FROM pg_constraint
     WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') AND condeferrable),
  (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal)
    + (SELECT count(*) FROM pg_rewrite WHERE ev_class = $1::regclass),
  (SELECT string_agg(t.tgname, ', ' ORDER BY t.tgname) FROM pg_trigger t
     LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint
     WHERE t.tgrelid = $1::regclass AND t.tgisinternal AND (t.tgtype & 4) <> 0
       AND (c.contype IS DISTINCT FROM 'f' OR c.conrelid <> t.tgrelid)),
  (SELECT a.attname FROM pg_constraint c
     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
     JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = c.confkey[1]
     WHERE c.conrelid = $1::regclass AND c.contype = 'f'
       AND (cardinality(c.conkey) <> 1 OR f.attname <> 'id'
            OR NOT (a.attname || '=' || c.confrelid::regclass::text = ANY ({known})))
     ORDER BY a.attname LIMIT 1)
"""

_MAY_SET_ROLE = """
SELECT rolsuper OR (current_setting('server_version_num')::int >= 150000
                    AND has_parameter_privilege('session_replication_role', 'SET'))
FROM pg_roles WHERE rolname = current_user
"""

_MAY_SET_ROLE_PRE15 = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"


def _scalar(cur: Any, sql: str, *params: Any) -> Any:
    cur.execute(sql, parameters=params or None)
    row = cur.fetchone()
    return None if row is None else row[0]


def _unsafe(cur: Any, resource: Resource) -> str | None:
    """Why skipping ``resource``'s triggers would skip more than the FK checks done here (None:
    it would not), as the catalog stands in ``cur``'s current statement."""
    known = ", ".join(f"'{c.name}={c.references}'" for c in resource.foreign_keys)
    cur.execute(_UNSAFE.format(known=f"ARRAY[{known}]::text[]"), parameters=(resource.table,))
    deferrable, own, internal, unknown_fk = cur.fetchone()
    table = resource.table
    if deferrable:
        return (
            f"{table} has deferrable constraints ({deferrable}), whose checks "
            "session_replication_role would skip"
        )
    if int(own):
        return f"{table} has triggers or rules of its own"
    if internal:
        return f"{table} has internal triggers bulkio does not know ({internal})"
    if unknown_fk:
        return f"{table} has a foreign key bulkio does not check ({unknown_fk})"
    return None


def probe(conn: Any, resource: Resource) -> str | None:
    """``None`` if set-based checks are safe for ``resource`` on the ADBC connection ``conn``,
    else the reason they are not. Reads the catalog only, in a transaction it rolls back."""
    if not resource.foreign_keys:
        return "the table has no references"
    cur = conn.cursor()
    try:
        version = int(_scalar(cur, "SELECT current_setting('server_version_num')"))
        may_set = _scalar(cur, _MAY_SET_ROLE if version >= 150000 else _MAY_SET_ROLE_PRE15)
        if not may_set:
            return (
                "the database role may not set session_replication_role (grant it with "
                "GRANT SET ON PARAMETER session_replication_role TO <role>, PostgreSQL 15+)"
            )
        return _unsafe(cur, resource)
    finally:
        cur.close()
        conn.rollback()


def recheck(cur: Any, resource: Resource) -> str | None:
    """In the transaction that is about to COPY into ``resource``'s table with triggers skipped:
    take the table's ROW EXCLUSIVE lock (held until that transaction ends; it conflicts with
    CREATE TRIGGER / CREATE RULE / ADD CONSTRAINT, so nothing can be added before the commit),
    then check the catalog again. ``None``: safe; else the reason, as :func:`probe` gives it."""
    cur.execute(f"LOCK TABLE {resource.table} IN ROW EXCLUSIVE MODE")
    return _unsafe(cur, resource)


def _stage(column: str) -> str:
    return f"bulkio_refs_{column}"


def _sorted_ids(column: pa.ChunkedArray) -> pa.Array:
    """Distinct non-null 16-byte ids in byte order (= UUID order)."""
    ids = pl.from_arrow(column.cast(pa.binary()))
    assert isinstance(ids, pl.Series)
    return ids.drop_nulls().unique().sort().to_arrow().cast(pa.binary(16))


def _lock(conn: Any, resource: Resource, rows: pa.Table) -> bool:
    """In a new transaction on ``conn``: lock every row that ``rows`` (the direct-COPY table,
    UUIDs as 16-byte binary) references; ``False`` if one is missing. Leaves it open."""
    cur = conn.cursor()
    try:
        # Key lookups by index in id order, whatever the (unanalysed) temp table's estimates
        # say; the statement is too small to gain from JIT compilation, which costs ~20 ms.
        cur.execute("SET LOCAL enable_hashjoin = off")
        cur.execute("SET LOCAL enable_mergejoin = off")
        cur.execute("SET LOCAL jit = off")
        for col in resource.foreign_keys:
            ids = _sorted_ids(rows.column(col.name))
            if not len(ids):
                continue
            stage = _stage(col.name)
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} (id uuid NOT NULL) ON COMMIT DELETE ROWS"
            )
            cur.adbc_ingest(stage, pa.table({"id": ids}), mode="append", temporary=True)
            # The ids are distinct and sorted, so the nested loop locks in key order (fewer
            # deadlocks with concurrent deleters). FOR KEY SHARE blocks neither inserts nor
            # updates of non-key columns of the parent.
            locked = _scalar(
                cur,
                f"SELECT count(*) FROM (SELECT FROM {stage} s JOIN {col.references} p "
                f"ON p.id = s.id FOR KEY SHARE OF p) locked",
            )
            if int(locked) != len(ids):
                return False
        return True
    finally:
        cur.close()


@dataclass(slots=True)
class Hold:
    """An open transaction holding one batch's referenced rows, in which the loader writes that
    batch; ended by :meth:`ReferenceLocker.release`. ``ok``: every referenced row exists and is
    locked. ``conn`` is None when no connection could be had or it was lost while locking."""

    conn: Any | None
    ok: bool
    released: bool = False


class ReferenceLocker:
    """Locks batches' referenced rows on connections and a thread of its own, so that the locks
    of the next batches are taken while the current one is written.

    Each :class:`Hold` owns its connection until :meth:`release`: the loader writes and commits
    the batch on it (see the module docstring), then releases it. ``size`` connections (opened on
    first use) bound how many batches hold locks at once (one being written, one waiting, one
    being locked); a lock waits for a free one. A connection that fails is closed and replaced by
    a new one on a later lock; nothing here raises for a lost connection: the batch then simply
    takes the loader's other paths.
    """

    def __init__(self, connect: Callable[[], Any], resource: Resource, size: int = 3) -> None:
        self._connect = connect
        self.resource = resource
        self._size = size
        self._free: list[Any] = []
        self._all: list[Any] = []  # open connections: free, locking or holding
        self._made = 0  # connections opened or being opened
        self._busy = 0  # lock() calls between taking a connection and returning
        self._closed = False
        self._cond = threading.Condition()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulkio-locker")

    def submit(self, rows: pa.Table) -> Future[Hold | None]:
        """Lock ``rows``' references in the locker's thread (see :meth:`lock`)."""
        return self._thread.submit(self.lock, rows)

    def lock(self, rows: pa.Table) -> Hold | None:
        """Lock ``rows``' references in a new transaction (``None`` once closed)."""
        with self._cond:
            while not self._closed and not self._free and self._made >= self._size:
                self._cond.wait()
            if self._closed:
                return None
            conn = self._free.pop() if self._free else None
            if conn is None:
                self._made += 1
            self._busy += 1
        try:
            if conn is None:
                try:
                    conn = self._connect()
                except adbc_driver_manager.DatabaseError as exc:
                    with self._cond:
                        self._made -= 1
                    self._failed("opening a locker connection", exc)
                    return Hold(None, False)
                except BaseException:
                    with self._cond:
                        self._made -= 1
                    raise
                with self._cond:
                    self._all.append(conn)
            try:
                return Hold(conn, _lock(conn, self.resource, rows))
            except adbc_driver_manager.DatabaseError as exc:
                # e.g. a deadlock with a concurrent deleter, or a connection the server ended
                # while it was idle: this batch takes the other paths.
                self._failed("locking referenced rows", exc)
                try:
                    conn.rollback()
                except adbc_driver_manager.DatabaseError:
                    self._discard(conn)
                    return Hold(None, False)
                return Hold(conn, False)
        except BaseException:
            if conn is not None:
                self._discard(conn)
            raise
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning(
            f"{what} failed; the batch is checked by the FK triggers",
            extra={"resource": self.resource.name, "error": str(exc).splitlines()[0]},
        )

    def release(self, pending: Future[Hold | None] | None) -> None:
        """End the transaction of a :meth:`submit` (rolled back unless the loader committed it)
        once its lock has finished, and make its connection free again; idempotent. A
        connection that cannot end its transaction is closed (the server then ends it)."""
        if pending is None or pending.cancelled() or pending.exception() is not None:
            return
        hold = pending.result()
        if hold is None or hold.released:
            return
        hold.released = True
        if hold.conn is None:
            return
        try:
            hold.conn.rollback()
        except adbc_driver_manager.DatabaseError:
            log.info("a locker connection was lost", extra={"resource": self.resource.name})
            self._discard(hold.conn)
            return
        except BaseException:
            self._discard(hold.conn)
            raise
        with self._cond:
            if self._closed:
                return
            self._free.append(hold.conn)
            self._cond.notify_all()

    def _discard(self, conn: Any) -> None:
        with self._cond:
            if conn in self._all:
                self._all.remove(conn)
                self._made -= 1
                self._cond.notify_all()
        _close_quietly(conn)

    def close(self) -> None:
        """Wake waiters, wait for a lock in progress, end every transaction, close connections."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            while self._busy:
                self._cond.wait()
            conns, self._all, self._free = self._all, [], []
        for conn in conns:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing a locker connection failed", exc_info=True)
