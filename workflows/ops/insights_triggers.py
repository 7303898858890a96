"""Insights' rollup triggers on SQLite (the embedded default): dropped before every migrate, made after it.

The rollups are written by database triggers (migration ``0015_insights_rollups``).
On PostgreSQL they live through later migrations, which alter tables in place.
SQLite alters a table by remaking it (create, copy, drop, rename), and a trigger
on ``workflows_run`` that reads ``workflows_workflow`` makes the rename of a
remade ``workflows_workflow`` fail ("error in trigger ... no such table"):
every later migration touching those tables would have to step around them.
Instead, on SQLite, ``pre_migrate`` drops the triggers and ``post_migrate``
(also sent after ``flush``) makes them again from the statements the migration
wrote, once every table has its final shape. A migration never has to know.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.utils import OperationalError

TRIGGER_NAMES = ("run_inserted", "run_updated", "step_inserted", "step_updated")
ROLLUP_TABLE = "workflows_runrollup"


def _migration() -> Any:
    """The migration that defines the triggers (its statements are the one source)."""
    folder = Path(__file__).resolve().parent.parent / "migrations"
    stem = next(folder.glob("*_insights_rollups.py")).stem
    return importlib.import_module(f"workflows.migrations.{stem}")


def drop_sqlite_triggers(*, using: str = "default", **_: Any) -> None:
    """``pre_migrate``: on SQLite, drop the rollup triggers so no table remake trips over them."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for name in TRIGGER_NAMES:
            cursor.execute(f"DROP TRIGGER IF EXISTS potaflow_insights_{name}")


def create_sqlite_triggers(*, using: str = "default", **_: Any) -> None:
    """``post_migrate``: on SQLite, (re)make the rollup triggers once the rollup tables exist."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    try:
        tables = set(connection.introspection.table_names())
    except OperationalError:
        return
    if ROLLUP_TABLE not in tables:
        return  # migrated backwards past 0015, or not that far yet
    drop_sqlite_triggers(using=using)
    # Without parameters: strftime's '%s' would be read as a placeholder.
    with connection.cursor() as cursor:
        for statement in _migration()._sqlite_forward()[: len(TRIGGER_NAMES)]:
            cursor.execute(statement)
