"""Set-based SQL for every app: COPY, unnest upserts, ON CONFLICT inserts, array lookups.

The one home of ``connection.vendor`` branches. Callers pass plain tuples in a stated field
order and never build SQL themselves; on PostgreSQL rows travel by binary COPY or as one
array per column (psycopg packs both in C), on SQLite through the ORM's bulk paths or a
multi-row VALUES list. Either way the rows written and the values returned are the same,
which the test suite checks on both databases.
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connection, models
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

WRITE_BATCH = 2000  # rows per ORM bulk statement (SQLite)
UPSERT_BATCH = 20000  # rows per unnest statement: one statement's arrays, a few MB
STAGE_MIN_ROWS = 5000  # from here an upsert stages its rows by COPY instead of arrays
VALUES_CHUNK = 5000  # pairs per VALUES list on SQLite (two bound parameters each)
INSERT_BATCH = 2000  # rows per multi-row VALUES insert on SQLite

# Values the driver adapts as they are; anything else (JSON, say) goes through the field.
_PLAIN_FIELDS = (models.IntegerField, models.FloatField, models.DateTimeField, models.ForeignKey, models.CharField)


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def rows_insert(model, fields: Sequence[str], rows: list[tuple]) -> None:
    """Insert ``rows`` (tuples in ``fields`` order) that do not exist yet.

    PostgreSQL: a binary COPY straight into the table, with no Python object per value."""
    if not rows:
        return
    columns = [model._meta.get_field(name) for name in fields]
    if not is_postgresql():
        model.objects.bulk_create(_objects(model, columns, rows), batch_size=WRITE_BATCH)
        return
    with connection.cursor() as cursor, connection.wrap_database_errors:
        _copy_rows(cursor, connection.ops.quote_name(model._meta.db_table), columns, rows)


def rows_upsert(
    model, fields: Sequence[str], rows: list[tuple], *, unique: Sequence[str], update: Sequence[str] = ()
) -> None:
    """Insert ``rows`` (tuples in ``fields`` order); on a conflict of ``unique`` set the
    ``update`` fields (default: all the others) of the stored row instead.

    PostgreSQL: ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per batch, from arrays for a
    few rows and from a binary COPY into a temporary table for many (a re-run of a full
    recompute rewrites every row; see docs/PERFORMANCE.md)."""
    if not rows:
        return
    columns = [model._meta.get_field(name) for name in fields]
    updated = [column for column in columns if (column.name in update if update else column.name not in unique)]
    if not is_postgresql():
        model.objects.bulk_create(
            _objects(model, columns, rows),
            batch_size=WRITE_BATCH,
            update_conflicts=True,
            unique_fields=list(unique),
            update_fields=[column.name for column in updated],
        )
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(column.column) for column in columns)
    on_conflict = (
        f"ON CONFLICT ({', '.join(quote(model._meta.get_field(name).column) for name in unique)}) DO UPDATE SET "
        + ", ".join(f"{quote(column.column)} = EXCLUDED.{quote(column.column)}" for column in updated)
    )
    with connection.cursor() as cursor, connection.wrap_database_errors:
        if len(rows) >= STAGE_MIN_ROWS and all(isinstance(column, _PLAIN_FIELDS) for column in columns):
            stage = quote(f"{model._meta.db_table}_stage")
            cursor.execute(f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS SELECT {names} FROM {table} WITH NO DATA")
            _copy_rows(cursor, stage, columns, rows)
            cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} {on_conflict}")
            cursor.execute(f"DROP TABLE {stage}")
            return
        sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({_arrays_sql(columns)}) {on_conflict}"
        for start in range(0, len(rows), UPSERT_BATCH):
            cursor.execute(sql, _arrays(columns, rows[start : start + UPSERT_BATCH]))


def rows_update(model, fields: Sequence[str], rows: list[tuple]) -> None:
    """Set ``fields`` by primary key: ``rows`` are (pk, *values in ``fields`` order).

    PostgreSQL: one ``UPDATE ... FROM unnest(arrays)`` per batch, linear in the rows.
    Django's bulk_update writes a CASE with one WHEN per row for every field, which
    PostgreSQL evaluates branch by branch for every row: quadratic per batch."""
    if not rows:
        return
    pk = model._meta.pk
    columns = [pk, *(model._meta.get_field(name) for name in fields)]
    if not is_postgresql():
        model.objects.bulk_update(_objects(model, columns, rows), list(fields), batch_size=500)
        return
    quote = connection.ops.quote_name
    names = ", ".join(quote(column.column) for column in columns)
    assignments = ", ".join(f"{quote(column.column)} = v.{quote(column.column)}" for column in columns[1:])
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} FROM unnest({_arrays_sql(columns)}) "
        f"AS v({names}) WHERE t.{quote(pk.column)} = v.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_BATCH):
            cursor.execute(sql, _arrays(columns, rows[start : start + UPSERT_BATCH]))


def rows_insert_new(
    model, fields: Sequence[str], rows: list[tuple], *, unique: str, group_by: Sequence[str]
) -> dict[tuple, int]:
    """Insert the rows whose ``unique`` value is not stored yet (of repeats within ``rows``
    the first wins); return how many were inserted per value of the ``group_by`` fields.

    One ``INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING`` per chunk. PostgreSQL: the
    rows arrive by binary COPY into a session temporary table first, and the statement
    answers with the inserted rows already counted per group (a few thousand rows back
    instead of one per inserted row). SQLite (3.35 or newer has RETURNING): a multi-row
    VALUES list per chunk. Either way rows are inserted in the given order.
    """
    if not rows:
        return {}
    columns = [model._meta.get_field(name) for name in fields]
    if is_postgresql():
        return _insert_new_staged(model, columns, rows, unique=unique, group_by=group_by)
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(column.column) for column in columns)
    unique_at = list(fields).index(unique)
    group_at = [list(fields).index(name) for name in group_by]
    groups: dict[object, tuple] = {}
    for row in rows:
        groups.setdefault(row[unique_at], tuple(row[i] for i in group_at))
    adapt = _sqlite_row_adapter(columns)
    created: dict[tuple, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(rows), INSERT_BATCH):
            chunk = rows[start : start + INSERT_BATCH]
            placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {placeholders} "
                f"ON CONFLICT ({quote(model._meta.get_field(unique).column)}) DO NOTHING "
                f"RETURNING {quote(model._meta.get_field(unique).column)}",
                [value for row in chunk for value in adapt(row)],
            )
            for (value,) in cursor.fetchall():
                group = groups[value]
                created[group] = created.get(group, 0) + 1
    return created


def _insert_new_staged(model, columns, rows: list[tuple], *, unique: str, group_by) -> dict[tuple, int]:
    """PostgreSQL half of rows_insert_new.

    Subtle: the stage table lives as long as the connection and is emptied by the same
    statement that moves its rows (DELETE ... RETURNING in a CTE), so a second call within
    one outer transaction never sees the first call's rows; ON COMMIT DELETE ROWS is the
    backstop when a statement fails half-way and the transaction rolls back to a savepoint.
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    stage = quote(f"{model._meta.db_table}_new_stage")
    names = ", ".join(quote(column.column) for column in columns)
    declared = ", ".join(f"{quote(column.column)} {column.db_type(connection)}" for column in columns)
    grouped = ", ".join(quote(model._meta.get_field(name).column) for name in group_by)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (ord integer NOT NULL, {declared}) ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(f"COPY {stage} (ord, {names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", *(_copy_type(column) for column in columns)])
            write_row = copy.write_row
            for position, row in enumerate(rows):
                write_row((position, *row))
        cursor.execute(
            f"WITH staged AS (DELETE FROM {stage} RETURNING *), "
            f"inserted AS (INSERT INTO {table} ({names}) SELECT {names} FROM staged ORDER BY ord "
            f"ON CONFLICT ({quote(model._meta.get_field(unique).column)}) DO NOTHING RETURNING {grouped}) "
            f"SELECT {grouped}, count(*) FROM inserted GROUP BY {grouped}"
        )
        return {tuple(found[:-1]): found[-1] for found in cursor.fetchall()}


def counter_increment(model, *, key: str, key_value: int, counter: str) -> int:
    """Add one to ``counter`` of the row whose unique ``key`` is ``key_value`` (creating it
    at 1) and return the new value: one upsert statement on both databases, row-locked
    until the caller's transaction ends."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key_column = quote(model._meta.get_field(key).column)
    counter_column = quote(model._meta.get_field(counter).column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({key_column}, {counter_column}) VALUES (%s, 1) "
            f"ON CONFLICT ({key_column}) DO UPDATE SET {counter_column} = {table}.{counter_column} + 1 "
            f"RETURNING {counter_column}",
            [key_value],
        )
        return cursor.fetchone()[0]


def row_lock_shared(model, pk: int):
    """The row, locked FOR SHARE until the transaction ends (PostgreSQL): other shared holders
    go on, FOR UPDATE and FOR NO KEY UPDATE wait. Django's select_for_update has no shared
    mode. SQLite serializes writers itself and needs none."""
    queryset = model.objects.filter(pk=pk)
    if is_postgresql():
        sql, params = queryset.query.sql_with_params()
        return model.objects.raw(f"{sql} FOR SHARE", params)[0]
    return queryset.get()


def pairs_in(pairs: list[tuple[int, datetime]], *, columns: tuple[str, str] = ("constituency_id", "hour")) -> Q:
    """``(a, b) IN`` the pairs as one semi-join, for any model with those two columns.

    Subtle: PostgreSQL then probes a (a, b) index once per pair (index-only where it covers
    the query); an OR of ``b = x AND a IN (...)`` per value plans as a bitmap heap scan of
    every page holding a matching row, and SQLite refuses such an OR past 1,000 terms
    (expression tree too deep). SQLite takes the pairs as VALUES lists, in chunks that stay
    under its limit of bound parameters."""
    quoted = "(" + ", ".join(connection.ops.quote_name(name) for name in columns) + ") IN "
    if is_postgresql():
        condition = RawSQL(
            quoted + "(SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))",
            ([a for a, _ in pairs], [b for _, b in pairs]),
            output_field=BooleanField(),
        )
        return Q(condition)
    q = Q(pk__in=[])
    for start in range(0, len(pairs), VALUES_CHUNK):
        chunk = pairs[start : start + VALUES_CHUNK]
        params = [value for a, b in chunk for value in (a, connection.ops.adapt_datetimefield_value(b))]
        values = ", ".join(["(%s, %s)"] * len(chunk))
        q |= Q(RawSQL(f"{quoted}(VALUES {values})", params, output_field=BooleanField()))
    return q


def ids_in(ids: Sequence[int], *, column: str = "constituency_id") -> Q:
    """``column IN ids``; on PostgreSQL one array parameter (``= ANY``), not one per id."""
    if is_postgresql():
        quoted = connection.ops.quote_name(column)
        return Q(RawSQL(f"{quoted} = ANY(%s::bigint[])", (list(ids),), output_field=BooleanField()))
    return Q(**{f"{column}__in": list(ids)})


def rows_from_starts(
    model,
    fields: Sequence[str],
    starts: dict[int, datetime | None],
    *,
    where: dict,
    key: str = "constituency_id",
    order: str = "hour",
    clauses_max: int = 20,
    in_list_max: int = 200,
) -> list[tuple]:
    """``fields`` of ``model``'s rows matching ``where`` whose ``key`` is in ``starts`` and
    whose ``order`` column is at or after that key's start (None: every row of the key).
    May return more rows (SQLite): callers filter by start again.

    Subtle: on PostgreSQL each key's rows are one probe of a (key, order) index from its own
    start: a LATERAL subquery per key, kept from being flattened into a join by OFFSET 0. As a
    plain join PostgreSQL hashed every row of the election, a hundred times slower for a
    flush's few hundred keys (docs/PERFORMANCE.md). SQLite gets one clause per distinct start,
    at most ``clauses_max``: the keys of the smallest groups share the earliest of theirs."""
    if not starts:
        return []
    if is_postgresql():
        quote = connection.ops.quote_name
        names = ", ".join(f"t.{quote(model._meta.get_field(name).column)}" for name in fields)
        conditions = "".join(f" AND t.{quote(model._meta.get_field(name).column)} = %s" for name in where)
        key_column, order_column = (quote(model._meta.get_field(name).column) for name in (key, order))
        sql = (
            f"SELECT {names} FROM unnest(%s::bigint[], %s::timestamptz[]) AS w(k, s) CROSS JOIN LATERAL "
            f"(SELECT * FROM {quote(model._meta.db_table)} AS t "
            f"WHERE t.{key_column} = w.k AND t.{order_column} >= w.s{conditions} OFFSET 0) AS t"
        )
        keys = list(starts)
        first = datetime(1, 1, 2, tzinfo=UTC)  # before any instant: "every row"
        with connection.cursor() as cursor:
            cursor.execute(sql, [keys, [starts[k] or first for k in keys], *where.values()])
            return cursor.fetchall()
    by_start: dict[datetime | None, list[int]] = {}
    for k, start in starts.items():
        by_start.setdefault(start, []).append(k)
    groups = sorted(by_start.items(), key=lambda group: -len(group[1]))
    if len(groups) > clauses_max:
        head, rest = groups[: clauses_max - 1], groups[clauses_max - 1 :]
        earliest = [start for start, _ in rest]
        groups = [*head, (None if None in earliest else min(earliest), [k for _, ks in rest for k in ks])]
    clauses = Q(pk__in=[])
    for start, ks in groups:
        clause = Q(**{f"{key}__in": sorted(ks)}) if len(ks) <= in_list_max else Q()
        if start is not None:
            clause &= Q(**{f"{order}__gte": start})
        if not clause:
            clauses = Q()  # every row matching ``where``
            break
        clauses |= clause
    return list(model.objects.filter(clauses, **where).values_list(*fields).order_by())


# PostgreSQL's wire protocol counts a statement's parameters in 16 bits.
SERVER_BOUND_PARAMETERS_MAX = 65_535


def rows_fetch(queryset) -> list[tuple]:
    """Every row of a ``values_list`` queryset of plain columns, as the driver decodes them
    (no field converters run, so no JSON or other converted fields).

    PostgreSQL: results in binary, through a psycopg cursor that binds on the server. In
    text the server formats every value and Django's timestamptz loader is a Python call per
    value: for the 111,000 buckets of a full recount that cost more than the scan's CPU
    (docs/PERFORMANCE.md, full recompute). The cursor is wrapped as Django wraps its own,
    so query logging and execute wrappers still see the statement. Binding on the server
    allows at most 65,535 parameters: a statement with more (an IN list over most of a
    national election's constituencies) is fetched as Django fetches it."""
    if not is_postgresql():
        return list(queryset)
    from psycopg import Cursor, pq

    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # a filter that matches nothing, e.g. an empty IN list
        return []
    if len(params) > SERVER_BOUND_PARAMETERS_MAX:
        return list(queryset)
    connection.ensure_connection()
    raw = Cursor(connection.connection)
    raw.format = pq.Format.BINARY
    cursor = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def rows_by_ids(model, ids: Iterable[int], fields: Sequence[str], *, lock_key_share: bool = False) -> dict[int, tuple]:
    """{pk: (field values...)} for the given primary keys, in one query; with
    ``lock_key_share`` the rows are locked FOR KEY SHARE until the transaction ends
    (PostgreSQL; SQLite has one writer at a time anyway)."""
    return rows_by_key(model, model._meta.pk.name, ids, fields, lock_key_share=lock_key_share)


def rows_by_key(
    model, key: str, values: Iterable, fields: Sequence[str], *, lock_key_share: bool = False
) -> dict[object, tuple]:
    """{key value: (field values...)} of the rows whose ``key`` is one of ``values``.

    PostgreSQL: one array parameter (``= ANY(%s)``); Django's IN list compiles and binds a
    parameter per value, which dominates for thousands of them."""
    wanted = sorted(set(values))
    if not wanted:
        return {}
    if not is_postgresql():
        found = {}
        for start in range(0, len(wanted), VALUES_CHUNK):
            rows = model.objects.filter(**{f"{key}__in": wanted[start : start + VALUES_CHUNK]}).values_list(
                key, *fields
            )
            found.update({value: tuple(rest) for value, *rest in rows.order_by()})
        return found
    quote = connection.ops.quote_name
    names = ", ".join(quote(model._meta.get_field(name).column) for name in fields)
    key_column = quote(model._meta.get_field(key).column)
    lock = " FOR KEY SHARE" if lock_key_share else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {key_column}, {names} FROM {quote(model._meta.db_table)} WHERE {key_column} = ANY(%s){lock}",
            [wanted],
        )
        return {value: tuple(rest) for value, *rest in cursor.fetchall()}


def int_rows(queryset) -> np.ndarray:
    """The rows of a ``values_list`` queryset of integer columns, as one int64 array of
    shape (rows, columns), with no Python object per value.

    PostgreSQL: the rows come back as one bytea of big-endian int8s (``string_agg`` of
    ``int8send``), read by numpy as it is: for the 64,000 rows of a national hour, half the
    time of fetching them as tuples (docs/PERFORMANCE.md, "National scale")."""
    sql, params = queryset.query.sql_with_params()
    width = len(queryset.query.values_select) + len(queryset.query.annotation_select)
    with connection.cursor() as cursor:
        if not is_postgresql():
            cursor.execute(sql, params)
            return np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, width)
        names = [f"c{i}" for i in range(width)]
        packed = " || ".join(f"int8send(t.{name})" for name in names)
        cursor.execute(f"SELECT string_agg({packed}, ''::bytea) FROM ({sql}) AS t({', '.join(names)})", params)
        data = cursor.fetchone()[0]
    if data is None:
        return np.empty((0, width), dtype=np.int64)
    return np.frombuffer(data, dtype=">i8").astype(np.int64).reshape(-1, width)


def derived_writes_tune() -> None:
    """Settings for the current transaction of a metrics flush only (PostgreSQL).

    Subtle: an asynchronous commit is safe for a flush because it writes only derived rows
    and deletes the marks it consumed in the same transaction: a crash that loses the commit
    loses both, and the surviving marks are flushed again. JIT compilation is off because a
    flush's queries are small probes that the cost model still rates worth compiling."""
    if not is_postgresql():
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute("SET LOCAL jit TO OFF")


def table_vacuum(model) -> bool:
    """VACUUM a small, busy table whose rows are deleted as fast as they are written
    (PostgreSQL, outside a transaction); True if it ran."""
    if not is_postgresql() or connection.in_atomic_block:
        return False
    with connection.cursor() as cursor:
        # SKIP_LOCKED: another process's vacuum of the table is as good as ours.
        cursor.execute(f"VACUUM (SKIP_LOCKED) {connection.ops.quote_name(model._meta.db_table)}")
    return True


def _copy_rows(cursor, table: str, columns, rows: list[tuple]) -> None:
    names = ", ".join(connection.ops.quote_name(column.column) for column in columns)
    with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_copy_type(column) for column in columns])
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def _copy_type(column) -> str:
    return column.db_type(connection).split("(")[0]


def _objects(model, columns, rows: list[tuple]) -> list:
    """Model instances of the rows, for the ORM's bulk paths on SQLite."""
    return [model(**{column.attname: value for column, value in zip(columns, row, strict=True)}) for row in rows]


def _arrays_sql(columns) -> str:
    return ", ".join(f"%s::{column.db_type(connection)}[]" for column in columns)


def _arrays(columns, rows: list[tuple]) -> list[list]:
    """One array per column: ``unnest`` turns them back into rows."""
    arrays = [list(values) for values in zip(*rows, strict=True)]
    for i, column in enumerate(columns):
        if not isinstance(column, _PLAIN_FIELDS):
            arrays[i] = [column.get_db_prep_save(value, connection) for value in arrays[i]]
    return arrays


def _sqlite_row_adapter(columns) -> Callable[[tuple], tuple]:
    """Raw SQL bypasses field adaptation: SQLite stores datetimes as naive UTC text.

    Rows of one batch share their hour buckets, their received_at and often their
    timestamps, so each distinct datetime is converted once."""
    datetime_at = [i for i, column in enumerate(columns) if isinstance(column, models.DateTimeField)]
    if not datetime_at:
        return tuple
    texts: dict[datetime, str] = {}

    def text(value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # parsed '...Z' / '+00:00', and every hour bucket
            return value.isoformat(" ")[:-6]  # without the '+00:00'
        if value.fold:
            # Subtle: within one zone, datetimes compare and hash ignoring fold, so the second
            # of two ambiguous wall times would find the first's text; never cache those.
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        found = texts.get(value)
        if found is None:
            found = texts[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        return found

    def adapt(row: tuple) -> list:
        values = list(row)
        for i in datetime_at:
            values[i] = text(values[i])
        return values

    return adapt
