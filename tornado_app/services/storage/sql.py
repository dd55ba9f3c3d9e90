"""The fast SQL paths the stores share: statements written out, not built a parameter at a time.

Peewee builds a statement one parameter at a time, which for a group commit's hundreds of
rows or ids costs milliseconds on the writer thread (the senders' acks wait for it). The
stores of each aggregate (``chat/store.py``, ``delivery/notification_store.py``,
``outbound/webhook_store.py``) write those statements through these helpers instead. Every
dialect difference lives here:

- the placeholder (``?`` on SQLite, ``%s`` on PostgreSQL: ``param``);
- ``UPDATE ... FROM (VALUES ...)``: psycopg2's ``execute_values`` on PostgreSQL; on SQLite a
  subquery names the ``column1, column2, ...`` of its ``VALUES``, in chunks below its limit
  of 32,766 parameters;
- ``IN (...)`` lists of ids, a chunk per statement (``select_in``).

Call every function on a database thread; the writes inside a transaction. A statement the
database refuses raises Peewee's error (``peewee.IntegrityError``, ...), as Peewee's own
queries do: the callers tell a duplicate from an outage by it.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

import peewee

from models import is_postgres

IN_CHUNK = 900  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
SQLITE_PARAMETERS = 30000  # parameters per statement on SQLite (its limit is 32,766)
# Peewee's own wrapper (what ``Database.execute_sql`` runs a statement in): the driver's errors
# raised as Peewee's (``peewee.IntegrityError``, ...), for the statements run on a raw cursor.
DRIVER_ERRORS_AS_PEEWEES = getattr(peewee, "__exception_wrapper__")


def database(model) -> peewee.Database:
    """The database (or the proxy standing for it) of ``model``."""
    return model._meta.database


def on_postgres(model) -> bool:
    """True when ``model`` lives in PostgreSQL (the models' database is a proxy to the real one)."""
    return is_postgres(database(model))


@contextlib.contextmanager
def snapshot(model) -> Iterator[None]:
    """Every statement inside reads one snapshot of the database (a read transaction).

    PostgreSQL's default isolation gives each statement its own view: two statements of one
    read can see a commit that fell between them in one and not in the other. Here they run
    in one REPEATABLE READ, READ ONLY transaction; SQLite's read transaction keeps the view
    its first statement took until it ends.
    """
    db = database(model)
    with db.atomic():
        if is_postgres(db):
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def param(model) -> str:
    """The placeholder of ``model``'s database: ``%s`` (PostgreSQL) or ``?`` (SQLite)."""
    return "%s" if on_postgres(model) else "?"


def quote(name: str) -> str:
    """A quoted SQL identifier (PostgreSQL and SQLite both use double quotes)."""
    return '"%s"' % name.replace('"', '""')


def update_from_values(model, assignments: Dict[str, str], names: Tuple[str, ...], where: str,
                       rows: List[tuple]) -> None:
    """One ``UPDATE table AS t SET ... FROM (VALUES rows) AS v WHERE ...`` for all ``rows``.

    ``assignments`` maps field names to SQL over ``t`` and ``v`` (``v``'s columns are
    ``names``); ``{field}`` in them and in ``where`` stands for that field's quoted column.
    Each target row must match one row of ``rows`` (the database applies only one match),
    so callers aggregate per target first. One statement, not one per row: PostgreSQL plans
    each statement, and on SQLite every statement hands the GIL back and forth with the loop.
    """
    if not rows:
        return
    columns = {name: quote(field.column_name) for name, field in model._meta.fields.items()}
    sets = ", ".join(f"{columns[f]} = {expr.format(**columns)}" for f, expr in assignments.items())
    head = f"UPDATE {quote(model._meta.table_name)} AS t SET {sets} FROM "
    tail = f" WHERE {where.format(**columns)}"
    db = database(model)
    if on_postgres(model):
        from psycopg2.extras import execute_values
        with DRIVER_ERRORS_AS_PEEWEES:
            execute_values(db.cursor(), f"{head}(VALUES %s) AS v({', '.join(names)}){tail}", rows, page_size=1000)
        return
    # SQLite names VALUES columns column1, column2, ...: a subquery gives them their names.
    renamed = ", ".join(f"column{i + 1} AS {n}" for i, n in enumerate(names))
    group = "(" + ", ".join("?" * len(names)) + ")"
    per_statement = max(1, SQLITE_PARAMETERS // len(names))
    for at in range(0, len(rows), per_statement):
        chunk = rows[at:at + per_statement]
        db.execute_sql(f"{head}(SELECT {renamed} FROM (VALUES {', '.join([group] * len(chunk))})) AS v{tail}",
                       [value for row in chunk for value in row])


def insert_returning_ids(model, fields: Sequence[str], rows: List[dict]) -> List[int]:
    """Insert ``rows`` (dicts over ``fields``) with one multi-row ``INSERT ... RETURNING``; their ids in order.

    The statement text is repeated from a one-row template made by Peewee, which is much
    cheaper than having Peewee build a statement with thousands of parameters. Should the
    template not have the expected shape, Peewee's ``insert_many`` stores them instead.
    """
    sample = rows[0]
    pk = model._meta.primary_key
    sql, params = model.insert({f: (sample[f] if sample[f] is not None else "") for f in fields}) \
        .returning(pk).sql()
    group_at, returning_at = sql.find("VALUES (") + 7, sql.rfind(" RETURNING ")
    group = sql[group_at:returning_at]
    if len(params) == len(fields) and group == "(" + ", ".join([param(model)] * len(fields)) + ")":
        order = _param_order(model, fields, sql)
        cursor = database(model).execute_sql(sql[:group_at] + ", ".join([group] * len(rows)) + sql[returning_at:],
                                             [row[f] for row in rows for f in order])
        # One statement numbers its rows in order; sorting guards against any reordering.
        return sorted(r[0] for r in cursor.fetchall())
    cursor = model.insert_many(rows).returning(pk).execute()
    return sorted(r[0] if isinstance(r, tuple) else r.id for r in cursor)


def _param_order(model, fields: Sequence[str], sql: str) -> List[str]:
    """The ``fields`` in the order their columns appear in an INSERT statement's column list."""
    columns = sql[sql.index("(") + 1:sql.index(")")]
    return sorted(fields, key=lambda f: columns.index(quote(getattr(model, f).column_name)))


def insert_values(model, columns: Sequence[str], rows: Sequence[Sequence], per_statement: int,
                  returning: bool = False) -> List[int]:
    """Insert ``rows`` (tuples over the column names ``columns``), ``per_statement`` rows per statement.

    With ``returning``, the new ids in order (one statement numbers its rows in order; sorting
    guards against any reordering); else an empty list.
    """
    mark = param(model)
    meta = model._meta
    head = f"INSERT INTO {quote(meta.table_name)} (" + ", ".join(quote(c) for c in columns) + ") VALUES "
    group = "(" + ", ".join([mark] * len(columns)) + ")"
    tail = f" RETURNING {quote(meta.primary_key.column_name)}" if returning else ""
    db = database(model)
    ids: List[int] = []
    for at in range(0, len(rows), per_statement):
        chunk = rows[at:at + per_statement]
        cursor = db.execute_sql(head + ", ".join([group] * len(chunk)) + tail, [v for row in chunk for v in row])
        if returning:
            ids.extend(sorted(r[0] for r in cursor.fetchall()))
    return ids


def update_in(model, values: Dict[str, object], ids: Sequence, chunk: int = IN_CHUNK) -> None:
    """``UPDATE`` the rows of ``model`` whose primary key is in ``ids``: set each field of ``values``
    (converted as the field stores it), ``chunk`` ids per statement."""
    mark, meta = param(model), model._meta
    fields = [meta.fields[name] for name in values]
    head = (f"UPDATE {quote(meta.table_name)} SET " + ", ".join(f"{quote(f.column_name)} = {mark}" for f in fields)
            + f" WHERE {quote(meta.primary_key.column_name)} IN ")
    params = [f.db_value(values[f.name]) for f in fields]
    db = database(model)
    for at in range(0, len(ids), chunk):
        part = list(ids[at:at + chunk])
        db.execute_sql(head + "(" + ", ".join([mark] * len(part)) + ")", params + part)


def select_in(model, sql: str, ids: Iterable, chunk: int = IN_CHUNK) -> List[tuple]:
    """``sql`` (one ``IN ({})``) for every id of ``ids``, ``chunk`` ids per statement; its rows as tuples."""
    mark = param(model)
    ids = list(ids)
    db = database(model)
    rows: List[tuple] = []
    for at in range(0, len(ids), chunk):
        part = ids[at:at + chunk]
        rows.extend(db.execute_sql(sql.format(", ".join([mark] * len(part))), part).fetchall())
    return rows
