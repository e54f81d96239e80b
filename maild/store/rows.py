"""Rows of every mail written with Core statements instead of unit-of-work flushes.

The ingest writer is maild's serial bottleneck, and a flush costs several times a Core
INSERT of the same row. Rows are built as model objects as ever (callers keep their
attributes; in-memory lists of events and posts keep working) and written at once; queries
see them immediately, with no autoflush needed. Never commits.

- `insert_row` / `insert_rows`: write-only rows (messages, posts, attachments, history,
  events; store.outbox writes its rows itself). The object stays transient, with its
  primary key and column defaults filled in: changing it later writes nothing, and
  relationships of the row (`case.posts`, `case.history`) show it only when loaded after
  the insert.
- `insert_persistent`: a row the transaction goes on using (a new case, contact,
  organization). The object joins the session as if loaded, and later changes to it are
  flushed as UPDATEs. A rolled-back SAVEPOINT does not take it out of the session as it
  does a pending object: the writer empties the session after a failed job.
- `update_row`: a column change of a loaded object, written now and not left dirty.
- `insert_unless_present`: a write-only row keyed by its content (raw mails), written now
  unless the database has it.
- `insert_later`: a write-only row nothing of the transaction reads back but through `read`
  (outbox mail), gathered and written with the others in one executemany by `write_later`:
  before any `read`, at the end of each writer job, and before a commit.
- `read`: a query of columns of rows only ever written this way (messages, outbox mail),
  as plain tuples, skipping the ORM's autoflush and Core's result machinery, which cost
  more than the query itself.

Foreign keys are written from the objects' columns: set them, not just the relationships.

These writes and reads skip even Core's execution machinery (`_execute`): each statement is
compiled once per dialect and sent to the DBAPI cursor with SQLAlchemy's own bind (and
result) processors, ~4× cheaper than `Connection.execute` for the ~12 statements of every
mail. Database errors come out as SQLAlchemy's exceptions all the same. Only public API is
used: the processors come from the types (`dialect_impl(dialect).bind_processor`,
`.result_processor`), looked up once per statement, not from the compiler's private caches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Insert, Select, Table, Update, bindparam, event, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Compiled, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, set_committed_value

from maild.store.models import Base
from maild.store.transaction import tx_state

_Column = tuple[str, Callable[[], Any] | None]  # attribute key, its Python default


class _Plan:
    """How one mapped class is written: its columns and defaults, and the statements, built once."""

    def __init__(self, cls: type[Base]):
        self.mapper = mapper = class_mapper(cls)
        self.table = table = mapper.local_table
        assert isinstance(table, Table)
        (pk,) = mapper.primary_key
        self.pk_key = mapper.get_property_by_column(pk).key
        self.columns: list[_Column] = []
        for prop in mapper.column_attrs:
            (column,) = prop.columns
            if column is pk:
                continue
            assert column.key == prop.key, f"{cls.__name__}.{prop.key}: attribute and column names differ"
            default = column.default
            factory: Callable[[], Any] | None = None
            if default is not None and default.is_callable:
                fn = default.arg  # type: ignore[attr-defined]
                factory = lambda fn=fn: fn(None)  # noqa: E731 - SQLAlchemy wraps it to take a context
            elif default is not None and default.is_scalar:
                factory = lambda value=default.arg: value  # type: ignore[attr-defined]  # noqa: E731
            self.columns.append((prop.key, factory))
        self.insert: Insert = insert(table)
        self.insert_returning = insert(table).returning(pk)
        self.update: Update = update(table).where(pk == bindparam("pk_"))

    def table_columns(self) -> list[Column[Any]]:
        """The table's columns in the order `load` reads them: the primary key, then self.columns."""
        return [self.table.c[self.pk_key], *(self.table.c[key] for key, _ in self.columns)]

    def values(self, obj: Base) -> dict[str, Any]:
        """Every column's value, defaults filled into the new (transient) object too, as a
        flush would; straight into its __dict__, which for a transient object is all that
        set_committed_value does."""
        state = instance_dict(obj)
        out = {}
        for key, factory in self.columns:
            if key not in state:
                state[key] = factory() if factory is not None else None
            out[key] = state[key]
        return out


_PLANS: dict[type, _Plan] = {}
_INSERTS: dict[Table, Insert] = {}  # write_later's statements, built once

_Params = Callable[[dict[str, Any]], Any]
_COMPILED: dict[tuple[int, str, str, tuple[str, ...]], tuple[str, _Params]] = {}


def _compiled(conn: Connection, statement: Insert | Update, keys: tuple[str, ...]) -> tuple[str, _Params]:
    """The statement's SQL for this dialect and a function turning a row into its DBAPI
    parameters, bind processors applied (JSON, UTC datetimes). Statements are the long-lived
    ones of _PLANS and _INSERTS, so their id() is a key."""
    dialect = conn.dialect
    key = (id(statement), dialect.name, dialect.driver, keys)
    hit = _COMPILED.get(key)
    if hit is None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        hit = _COMPILED[key] = (compiled.string, _bind_params(compiled, dialect))
    return hit


def _bind_processors(compiled: Compiled, dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """The bind processor of each parameter of the SQL that has one, by its name there: what
    Connection.execute would apply, from public API (SQLCompiler.bind_names, the types'
    dialect_impl().bind_processor()); built once per statement and dialect, so no slower than
    reading the compiler's private cache."""
    found = {}
    for bind, name in compiled.bind_names.items():  # type: ignore[attr-defined]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            found[name] = processor
    return found


def _bind_params(compiled: Compiled, dialect: Dialect) -> _Params:
    processors = _bind_processors(compiled, dialect)
    order = compiled.positiontup
    if dialect.positional and order is not None:
        def params(row: dict[str, Any], order: list[str] = order) -> Any:
            return tuple(processors[k](row[k]) if k in processors else row[k] for k in order)
    else:
        def params(row: dict[str, Any]) -> Any:
            return {k: processors[k](v) if k in processors else v for k, v in row.items()}
    return params


def _connection(session: Session) -> Connection:
    """The session's connection, kept in the transaction's state (store.transaction):
    `Session.connection()` costs more than most statements it is asked for."""
    state = tx_state(session)
    conn = state.connection
    if conn is None or conn.closed or not conn.in_transaction():
        conn = state.connection = session.connection()
    return conn


def _execute(conn: Connection, sql: str, params: Any, *, many: bool = False, fetch: bool = False) -> Any:
    """`sql` on a DBAPI cursor of `conn`; its rows if `fetch`. Errors come out as SQLAlchemy's."""
    dialect = conn.dialect
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        if many:
            dialect.do_executemany(cursor, sql, params)
        else:
            dialect.do_execute(cursor, sql, params)
        return cursor.fetchall() if fetch else None
    except dialect.loaded_dbapi.Error as e:
        invalid = dialect.is_disconnect(e, raw, cursor)
        if invalid:
            conn.invalidate(e)
        raise DBAPIError.instance(sql, None, e, dialect.loaded_dbapi.Error,
                                  connection_invalidated=invalid, dialect=dialect) from e
    finally:
        cursor.close()


def _run(session: Session, statement: Insert | Update, rows: list[dict[str, Any]], returning: bool = False) -> Any:
    """Runs `statement` for each of `rows` (one executemany for several); the first column
    of the one row RETURNING gives, if asked."""
    conn = _connection(session)
    sql, params = _compiled(conn, statement, tuple(rows[0]))
    if len(rows) > 1:
        return _execute(conn, sql, [params(r) for r in rows], many=True)
    found = _execute(conn, sql, params(rows[0]), fetch=returning)
    return found[0][0] if returning else None


def _plan(cls: type[Base]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(cls)
    return plan


def insert_row(session: Session, obj: Base) -> int:
    """INSERTs one new object's row now; sets and returns its primary key."""
    plan = _plan(type(obj))
    pk = _run(session, plan.insert_returning, [plan.values(obj)], returning=True)
    instance_dict(obj)[plan.pk_key] = pk
    return int(pk)


def insert_rows(session: Session, objs: Sequence[Base]) -> None:
    """INSERTs new objects of one class in one executemany; their primary keys stay unset."""
    if not objs:
        return
    plan = _plan(type(objs[0]))
    assert all(type(o) is type(objs[0]) for o in objs)
    _run(session, plan.insert, [plan.values(o) for o in objs])


def insert_persistent(session: Session, obj: Base, loaded: dict[str, Any] | None = None) -> int:
    """INSERTs a new object's row now and adds the object to the session as if it had been
    loaded; returns its primary key. `loaded`: relationships known already (related objects
    of the session, empty collections), set as loaded so that reading them costs no query;
    cheaper than giving them to the constructor, whose events expect a pending object."""
    pk = insert_row(session, obj)
    make_transient_to_detached(obj)
    session.add(obj)
    for key, value in (loaded or {}).items():
        set_committed_value(obj, key, value)
    return pk


def update_row(session: Session, obj: Base, **values: Any) -> None:
    """UPDATEs columns of a loaded object's row now; the object shows the values, not dirty."""
    plan = _plan(type(obj))
    _run(session, plan.update, [{**values, "pk_": getattr(obj, plan.pk_key)}])
    for key, value in values.items():
        set_committed_value(obj, key, value)



_UNLESS_PRESENT: dict[tuple[Table, str], Insert] = {}


def insert_unless_present(session: Session, table: Table, row: dict[str, Any]) -> None:
    """INSERTs `row` now unless its primary key is there already (content-addressed rows:
    the same bytes come again for another mailbox)."""
    conn = _connection(session)
    key = (table, conn.dialect.name)
    statement = _UNLESS_PRESENT.get(key)
    if statement is None:
        dialect_insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[conn.dialect.name]
        statement = _UNLESS_PRESENT[key] = dialect_insert(table).on_conflict_do_nothing()
    _run(session, statement, [row])


def insert_later(session: Session, table: Table, row: dict[str, Any]) -> None:
    """`row` (every column) is written by the next write_later, with the other rows of its table."""
    tx_state(session).later.setdefault(table, []).append(row)


def write_later(session: Session) -> None:
    """Writes what insert_later gathered (kept in the transaction's state): one executemany a table."""
    state = tx_state(session)
    later = state.later
    if later:
        state.later = {}
        for table, rows in later.items():
            statement = _INSERTS.get(table)
            if statement is None:
                statement = _INSERTS[table] = insert(table)
            _run(session, statement, rows)


# Every session, however made (the daemon's, the CLI's): nothing gathered is left unwritten.
event.listen(Session, "before_commit", write_later)


_ReadPlan = tuple[str, _Params, list[Callable[[Any], Any] | None]] | None
_READS: dict[tuple[int, str, str], _ReadPlan] = {}


def _read_plan(conn: Connection, statement: Select[Any]) -> _ReadPlan:
    """The query's SQL, parameters and result processors (UTC datetimes, JSON) for this
    dialect; None for a statement rendered anew for each call (an expanding IN, a LIMIT)."""
    compiled = statement.compile(dialect=conn.dialect)
    if "__[POSTCOMPILE_" in compiled.string:
        return None
    dialect = conn.dialect
    processors = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                  for column in statement.selected_columns]
    return compiled.string, _bind_params(compiled, conn.dialect), processors


def read(session: Session, statement: Select[Any], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of a query of columns, on the session's connection without autoflush: only
    for tables whose rows are written through Core (messages, outbox), so nothing of theirs
    is pending in the session once write_later has run."""
    write_later(session)
    conn = _connection(session)
    key = (id(statement), conn.dialect.name, conn.dialect.driver)
    if key not in _READS:
        _READS[key] = _read_plan(conn, statement)
    plan = _READS[key]
    if plan is None:
        return [tuple(row) for row in conn.execute(statement, params)]
    sql, to_params, processors = plan
    rows = _execute(conn, sql, to_params(params), fetch=True)
    if not any(processors):
        return [tuple(row) for row in rows]
    return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]


def columns(cls: type[Base]) -> list[Column[Any]]:
    """Every column of a class, for a query `load` turns into objects."""
    return _plan(cls).table_columns()


def load(session: Session, statement: Select[Any], params: dict[str, Any],
         classes: tuple[type[Base], ...]) -> list[tuple[Base | None, ...]]:
    """`read` for whole objects: a query of `columns(cls)` for each of `classes` (None where an
    outer join found none) as objects of the session, the session's own where it has them,
    others joined to it as if the ORM had loaded them (relationships load lazily as ever).
    Nothing is flushed first: only for rows written at once (insert_persistent, update_row)."""
    out = []
    for row in read(session, statement, params):
        objs: list[Base | None] = []
        start = 0
        for cls in classes:
            plan = _plan(cls)
            end = start + 1 + len(plan.columns)
            pk, values = row[start], row[start + 1:end]
            start = end
            if pk is None:
                objs.append(None)
                continue
            obj = session.identity_map.get(plan.mapper.identity_key_from_primary_key((pk,)))
            if obj is None:
                obj = plan.mapper.class_manager.new_instance()
                state = instance_dict(obj)
                state[plan.pk_key] = pk
                state.update(zip((key for key, _ in plan.columns), values, strict=True))
                make_transient_to_detached(obj)
                session.add(obj)
            objs.append(obj)
        out.append(tuple(objs))
    return out
