"""No index that another makes redundant: each one costs every insert of a run or step (issue 11)."""

import pytest
from django.db import connection

TABLES = ["workflows_run", "workflows_steprun", "workflows_stepattempt", "workflows_workflowversion"]


@pytest.mark.services
@pytest.mark.django_db
def test_no_index_is_a_prefix_of_another():
    if connection.vendor != "postgresql":
        pytest.skip("index layout checked on PostgreSQL, the production database")
    redundant = []
    with connection.cursor() as cursor:
        for table in TABLES:
            constraints = connection.introspection.get_constraints(cursor, table)
            indexes = {
                name: tuple(c["columns"])
                for name, c in constraints.items()
                if (c["index"] or c["unique"]) and c["columns"] and not c["primary_key"] and not c["foreign_key"]
            }
            assert indexes, table
            for name, columns in indexes.items():
                if constraints[name]["unique"]:
                    continue
                for other, other_columns in indexes.items():
                    if other != name and other_columns[: len(columns)] == columns:
                        redundant.append(f"{table}.{name} {columns} is a prefix of {other} {other_columns}")
    assert redundant == []
