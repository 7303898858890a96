"""Page numbers over the runs table, shared by the admin's run list and the member pages' runs.

(The API pages by cursor: ``workflows.api.RunPagination``.)
"""

from typing import Any, cast

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

from .models import Run


class RunListPaginator(Paginator):
    """Page numbers over a large table: an estimated count, and a page's rows found by id first.

    ``COUNT(*)`` reads every matching row: 0.1 s or more at a million runs, on
    every page. Above ``EXACT_BELOW`` the admin shows the planner's estimate
    (the page links are then approximate: the last page may come out short).
    A page's ids come from the list's index alone (``OFFSET`` over narrow index
    entries), then only its rows are read and joined to their workflow:
    ``OFFSET`` over the joined rows costs 3-4 times as much on deep pages.
    """

    EXACT_BELOW = 10_000

    def _runs(self) -> "QuerySet[Run]":
        return cast("QuerySet[Run]", self.object_list)  # the run list's queryset (RunAdmin.paginator)

    @cached_property
    def count(self) -> int:
        queryset = self._runs()
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return super().count
        sql, params = queryset.order_by().query.get_compiler(queryset.db).as_sql()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        return super().count if estimate < self.EXACT_BELOW else estimate

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(self._runs().values_list("pk", flat=True)[bottom:top])
        # Django's hook for the Page class (what Paginator.page calls).
        return self._get_page(self._runs().filter(pk__in=ids), number, self)  # type: ignore[attr-defined]  # not in stubs
