"""The parameters a console list takes: its own (search, ordering, page, popup…), its filters', its date
drill-down's, and the few lookups the console's own links to it use (`list_lookups` on its ModelAdmin).
Django's admin takes any lookup on the model's own fields besides, and passes it to the database:
`?name__regex=(`, `?created_at__year__gte=10000` or `?max_power_w__in=<a 23-digit number>` were server errors,
and `?request_body__icontains=` read every row of a big log the list otherwise filters by indexed columns only.
ConsoleQueryMiddleware (emsp/middleware.py) refuses any other parameter (400)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IS_FACETS_VAR, IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ALL_VAR, ERROR_FLAG, ORDER_VAR, PAGE_VAR, SEARCH_VAR
from django.contrib.admin.widgets import url_params_from_lookup_dict
from django.db import models
from django.http import HttpRequest

# A list's parameters that filter nothing: show all, ordering, page, search, "wrong filters" (ERROR_FLAG), facets,
# popup.
LIST_PARAMETERS = frozenset(
    {ALL_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR, ERROR_FLAG, IS_FACETS_VAR, IS_POPUP_VAR, TO_FIELD_VAR}
)
# The parameters that make a list a lookup popup and name the field it chooses for.
POPUP_PARAMETERS = (IS_POPUP_VAR, TO_FIELD_VAR)
DRILL_DOWN_PARTS = ("year", "month", "day")


def list_parameters(model_admin: admin.ModelAdmin, request: HttpRequest) -> set[str]:
    """Every query parameter `model_admin`'s list takes."""
    names = set(LIST_PARAMETERS)
    for list_filter in model_admin.get_list_filter(request):
        names.update(_filter_parameters(model_admin, request, list_filter))
    if model_admin.date_hierarchy:
        names.update(f"{model_admin.date_hierarchy}__{part}" for part in DRILL_DOWN_PARTS)
    names.update(getattr(model_admin, "list_lookups", ()))
    # A raw-id popup from a key limited to some rows (ForeignKey.limit_choices_to) lists them by its limits, as
    # Django's ModelAdmin.lookup_allowed lets it.
    for limits in model_admin.model._meta.related_fkey_lookups:
        names.update(url_params_from_lookup_dict(limits() if callable(limits) else limits))
    return names


def _filter_parameters(model_admin: admin.ModelAdmin, request: HttpRequest, list_filter: Any) -> list[str]:
    """The parameters one entry of list_filter reads (what its filter's expected_parameters() would say, without
    making the filter: a field's filter reads its choices from the database as it is made)."""
    if callable(list_filter):  # a filter class of its own (admin.SimpleListFilter, mostly)
        if issubclass(list_filter, admin.SimpleListFilter):
            return [list_filter.parameter_name]
        return list(list_filter(request, {}, model_admin.model, model_admin).expected_parameters())
    path, filter_class = list_filter if isinstance(list_filter, (tuple, list)) else (list_filter, None)
    field = path if isinstance(path, models.Field) else get_fields_from_path(model_admin.model, path)[-1]
    path = path.name if isinstance(path, models.Field) else path
    if filter_class is not None and not issubclass(filter_class, admin.RelatedFieldListFilter):
        return list(filter_class(field, request, {}, model_admin.model, model_admin, path).expected_parameters())
    # Django's own field filters: RelatedFieldListFilter (a relation, by the key it points at), and for a
    # plain field AllValuesFieldListFilter (bare), ChoicesFieldListFilter and BooleanFieldListFilter (__exact),
    # DateFieldListFilter (__gte, __lt) and EmptyFieldListFilter (__isempty); each also __isnull.
    if field.is_relation:
        return [f"{path}__{field.target_field.name}__exact", f"{path}__isnull"]
    names = [path, f"{path}__exact", f"{path}__isnull", f"{path}__isempty"]
    if isinstance(field, models.DateField):
        names += [f"{path}__gte", f"{path}__lt"]
    return names
