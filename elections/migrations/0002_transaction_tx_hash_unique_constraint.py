"""tx_hash unique through a named UniqueConstraint instead of unique=True.

On PostgreSQL unique=True also builds a varchar_pattern_ops "_like" index: a second B-tree
on the 64-character hash, updated by every insert and read by nothing (tx_hash is only
looked up exactly). The state change is the usual AlterField + AddConstraint; on PostgreSQL
the database side keeps the existing unique index, renamed, and drops the "_like" index, so
the migration takes no time and never rebuilds (or re-checks) the uniqueness of a large
table. Other databases (SQLite) run the usual operations.
"""

from django.db import migrations, models

TABLE = "elections_transaction"
NAME = "transaction_tx_hash_unique"


def _postgresql_indexes(schema_editor) -> tuple[str | None, list[str]]:
    """The unique constraint on (tx_hash) as created by unique=True, and its "_like" indexes."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    unique = [
        name
        for name, info in constraints.items()
        if info["columns"] == ["tx_hash"] and info["unique"] and not info["primary_key"] and name != NAME
    ]
    like = [
        name
        for name, info in constraints.items()
        if info["columns"] == ["tx_hash"] and info["index"] and not info["unique"] and name.endswith("_like")
    ]
    return (unique[0] if len(unique) == 1 else None), like


class SwapUniqueForConstraint(migrations.SeparateDatabaseAndState):
    def __init__(self, operations):
        super().__init__(database_operations=operations, state_operations=operations)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            unique, like = _postgresql_indexes(schema_editor)
            if unique is not None:
                quote = schema_editor.quote_name
                schema_editor.execute(f"ALTER TABLE {quote(TABLE)} RENAME CONSTRAINT {quote(unique)} TO {quote(NAME)}")
                for name in like:
                    schema_editor.execute(f"DROP INDEX {quote(name)}")
                return
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def deconstruct(self):
        return self.__class__.__name__, [self.database_operations], {}


class Migration(migrations.Migration):
    dependencies = [
        ("elections", "0001_initial"),
    ]

    operations = [
        SwapUniqueForConstraint(
            [
                migrations.AlterField(
                    model_name="transaction",
                    name="tx_hash",
                    field=models.CharField(max_length=128),
                ),
                migrations.AddConstraint(
                    model_name="transaction",
                    constraint=models.UniqueConstraint(fields=("tx_hash",), name=NAME),
                ),
            ]
        ),
    ]
