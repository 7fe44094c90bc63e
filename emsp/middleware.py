"""Request and correlation ids: generated when absent, echoed on the response; every log line carries them
(emsp/logs.py), and so do the tasks queued and the outbound calls made meanwhile. And the console's refusal of
parameters it would answer with a server error (a NUL, a date past the last year, a selected row that is no
key, a lookup a list has no filter for)."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, models
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect, QueryDict

from emsp.text import CONTROL_CHARACTERS

logger = logging.getLogger(__name__)

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")


def _clean(value: str | None) -> str | None:
    # Ids are echoed into headers and logs: keep them short and printable.
    if not value:
        return None
    value = value.strip()[:100]
    if not value or not (value.isascii() and value.isprintable()) or " " in value:
        return None
    return value


def request_ids(headers: Mapping[str, str]) -> tuple[str, str]:
    """The request's X-Request-ID and X-Correlation-ID (from its headers) when usable, else a new id for both."""
    request_id = _clean(headers.get("X-Request-ID")) or str(uuid.uuid4())
    return request_id, _clean(headers.get("X-Correlation-ID")) or request_id


class RequestIdMiddleware:
    """Reads X-Request-ID / X-Correlation-ID (OCPI transport §4.1.3), makes them when missing, echoes both."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id, correlation_id = request_ids(request.headers)
        request.request_id = request_id  # type: ignore[attr-defined]
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        t1 = request_id_var.set(request_id)
        t2 = correlation_id_var.set(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(t1)
            correlation_id_var.reset(t2)
        response["X-Request-ID"] = request_id
        response["X-Correlation-ID"] = correlation_id
        return response


# A date drill-down (a list's date_hierarchy, `<field>__year`/`__month`/`__day`): the admin computes the end of
# the year, month or day asked for, which for the year 9999 is past the last date there is (a server error).
_DRILL_DOWN = {"year": (1, 9998), "month": (1, 12), "day": (1, 31)}
# The rows an admin action is posted for (django.contrib.admin.helpers.ACTION_CHECKBOX_NAME, not imported: the
# OCPI and Beckn lanes import this module for the request ids and load no admin).
ACTION_CHECKBOX_NAME = "_selected_action"


def _console_refusal(parameters: QueryDict) -> str | None:
    """Why these console parameters are refused, or None."""
    for name, values in parameters.lists():
        for text in (name, *values):
            if (found := CONTROL_CHARACTERS.search(text)) is not None:
                what = "a NUL" if found.group() == "\x00" else f"the control character U+{ord(found.group()):04X}"
                return f"The console parameter {name!r} can't contain {what}."
        part = name.rpartition("__")[2] if "__" in name else ""
        if part in _DRILL_DOWN:
            low, high = _DRILL_DOWN[part]
            for value in values:
                if not (value.isascii() and value.isdigit() and len(value) <= 4 and low <= int(value) <= high):
                    return f"The console filter {name!r} is a {part} from {low} to {high}."
    return None


class ConsoleQueryMiddleware:
    """Console parameters the admin would pass on to a server error are refused (400):

    - a NUL or another control character (but tab, line feed and carriage return) in any parameter's name or
      value, query string or form alike. The admin passes list filter values straight to the database, and
      PostgreSQL refuses a NUL in text: `?status__exact=%00`, and `?event=%00` on the ledger entries (a filter
      named without a lookup), were server errors;
    - a date drill-down outside the years 1 to 9998, months 1 to 12 or days 1 to 31, or no number
      (`?end_date_time__year=9999` on the CDRs was a server error);
    - an action posted on a list with a selected row that is not one of the list's keys (`_selected_action=abc`
      was a ValueError in the admin's filter);
    - a list's parameter that is none of its own, its filters', its date drill-down's or its links'
      (emsp/admin_lookups.py): Django's admin passes any lookup on the model's fields to the database, where
      `?name__regex=(` or `?max_power_w__in=<a 23-digit number>` was a server error.

    And a list whose filters' values the database refused after all (a number past its column, a date past its
    calendar) goes back to the whole list, as Django's admin does with values it finds wrong itself (`?e=1`)."""

    PREFIX = "/admin/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.PREFIX):
            refusal = _console_refusal(request.GET)
            if refusal is None and request.method == "POST":
                refusal = _console_refusal(request.POST)
            if refusal is not None:
                return HttpResponseBadRequest(refusal, content_type="text/plain")
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        model_admin = getattr(view, "model_admin", None)  # set on each ModelAdmin view (ModelAdmin.get_urls)
        if model_admin is None or not _is_changelist(request):
            return None
        from emsp.admin_lookups import list_parameters  # the admin's (not loaded by the OCPI and Beckn lanes)

        taken = list_parameters(model_admin, request)
        for name in request.GET:
            if name not in taken:
                return HttpResponseBadRequest(
                    f"The list of {model_admin.model._meta.verbose_name_plural} can't be filtered by {name[:60]!r}: "
                    "only by the filters it shows.",
                    content_type="text/plain",
                )
        if request.method != "POST" or "action" not in request.POST:
            return None
        key = model_admin.model._meta.pk
        while key.is_relation:  # a key that is a one-to-one link: the key it points at
            key = key.target_field
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            if not _is_key(key, value):
                return HttpResponseBadRequest(
                    f"A selected row ({value[:40]!r}) is not a key of this list.", content_type="text/plain"
                )
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, IntegrityError) and request.path_info.startswith(self.PREFIX):
            return _conflicting_save(request, exception)
        # A list, filtered, that the database refused to count or read: a filter's value past what its column
        # or calendar holds, which Django's admin passes on unchecked (a numeric overflow, a date out of range).
        # A list without filters that fails is a fault of ours, and stays one.
        if (
            not isinstance(exception, (DataError, ArithmeticError, ValueError))
            or request.method not in ("GET", "HEAD")
            or not request.path_info.startswith(self.PREFIX)
            or not _is_changelist(request)
        ):
            return None
        from emsp.admin_lookups import ERROR_FLAG, LIST_PARAMETERS, POPUP_PARAMETERS

        if all(name in LIST_PARAMETERS for name in request.GET):  # not filtered
            return None
        logger.warning("console list %s refused its filters: %r", request.path_info, exception)
        if ERROR_FLAG in request.GET:
            return HttpResponseBadRequest("The database refused these filters' values.", content_type="text/plain")
        # A lookup popup (a raw-id field's magnifier) stays a popup, choosing for the same field.
        kept = QueryDict(mutable=True)
        kept[ERROR_FLAG] = "1"
        for name in POPUP_PARAMETERS:
            if name in request.GET:
                kept[name] = request.GET[name]
        return HttpResponseRedirect(f"{request.path}?{kept.urlencode()}")


def _conflicting_save(request: HttpRequest, exception: IntegrityError) -> HttpResponse | None:
    """An add or edit page's save that the database refused after the form had passed: another save made in the
    same instant took the unique value (two staff adding the same token uid). The admin saves in one transaction,
    rolled back by now: the page comes back with what happened instead of a server error."""
    match = request.resolver_match
    if request.method != "POST" or match is None or not (match.url_name or "").endswith(("_add", "_change")):
        return None
    from django.contrib import messages

    logger.warning("console save on %s refused by the database: %r", request.path_info, exception)
    messages.error(
        request,
        "Nothing was saved: another change saved at the same moment holds a value this one must not share "
        "(a uid or a key, say). Check the page as it is now and save again if still needed.",
    )
    return HttpResponseRedirect(request.get_full_path())


def _is_changelist(request: HttpRequest) -> bool:
    match = request.resolver_match
    return match is not None and (match.url_name or "").endswith("_changelist")


def _is_key(field: Any, value: str) -> bool:
    """Can `value`, as posted, be a value of the key `field`? An integer key: decimal digits, within the
    column's range."""
    if isinstance(field, models.IntegerField):
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            return False
        low, high = connection.ops.integer_field_range(field.get_internal_type())
        return (low is None or low <= int(value)) and (high is None or int(value) <= high)
    try:
        field.to_python(value)
    except ValidationError:
        return False
    return True
