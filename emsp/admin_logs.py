"""The console's lists of the big logs (OCPI messages, deliveries: tens of millions of rows between prunes).
Django's admin counts the whole filtered list on every page, offers date drill-downs that read every row,
and lets anyone sort by any column; at that size each is seconds to minutes. A log's list here counts at most
LOG_LIST_MAX_ROWS rows (newest first, then narrow with the filters, all indexed), never the whole table, and
sorts by time only (docs/benchmarks.md, "Retention")."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator

LOG_LIST_MAX_ROWS = 10_000


class CappedPaginator(Paginator):
    """Counts the list only up to LOG_LIST_MAX_ROWS (one bounded COUNT over a LIMIT): page numbers stop there,
    and `capped` says there is more. The count reads only `count_field` (the log's time, in every index the
    filters use: an index-only scan), in no particular order."""

    max_rows = LOG_LIST_MAX_ROWS

    def __init__(self, *args: Any, count_field: str = "pk", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count_field = count_field

    @cached_property
    def _bounded_count(self) -> int:
        rows = self.object_list.order_by().values(self.count_field)  # type: ignore[attr-defined]
        return rows[: self.max_rows + 1].count()  # type: ignore[no-any-return]

    @cached_property
    def count(self) -> int:
        return min(self._bounded_count, self.max_rows)

    @property
    def capped(self) -> bool:
        return self._bounded_count > self.max_rows


class LogAdminMixin:
    """For a ModelAdmin of a big log: the capped paginator, no full count, no facet counts, sorted by time only.
    Its list_filter should name indexed columns only, and it should have no date_hierarchy (which reads the
    distinct years, months and days of every row): a ("<time field>", DateFieldListFilter) does the same by
    ranges."""

    paginator = CappedPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 200
    list_per_page = 50

    log_time_field = "created_at"

    def get_paginator(self, request: Any, queryset: Any, per_page: int, *args: Any, **kwargs: Any) -> Paginator:
        return CappedPaginator(queryset, per_page, *args, count_field=self.log_time_field, **kwargs)

    def is_changelist(self, request: Any) -> bool:
        match = getattr(request, "resolver_match", None)
        return match is not None and str(match.url_name).endswith("_changelist")
