"""OCPI URLs: versions at /ocpi/versions; per version (2.1.1, 2.2.1, 2.3.0) version details at /ocpi/{version},
credentials at /ocpi/{version}/credentials, our modules under /ocpi/emsp/{version}/ (ocpi/versions/)."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, include, path, register_converter

from ocpi.hubclientinfo import VERSIONS as HUB_CLIENT_INFO_VERSIONS
from ocpi.versions import CANONICAL, SUPPORTED
from ocpi.versions.wire import versioned
from ocpi.views.cdrs import CdrDetailView, CdrReceiverView
from ocpi.views.commands import CommandResultView
from ocpi.views.credentials import CredentialsView
from ocpi.views.hubclientinfo import HubClientInfoView
from ocpi.views.locations import ConnectorView, EvseView, LocationView
from ocpi.views.sessions import SessionReceiverView
from ocpi.views.tariffs import TariffReceiverView
from ocpi.views.tokens import TokenAuthorizeView, TokenListView
from ocpi.views.versions import VersionDetailsView, VersionsView

app_name = "ocpi"


class _Rest:
    """The rest of the path, whatever it holds: `/` and line breaks too (Django's `path` stops at a line break, so
    a hostile id would miss the view and its protocol error)."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(_Rest, "rest")


def _receiver_urls(version: str) -> list[URLPattern]:
    """One version's receivers, below /ocpi/emsp/{version}/ (the same layout in 2.1.1, 2.2.1 and 2.3.0: every
    receiver takes {country_code}/{party_id} in its path since 2.1.1). 2.2.1 keeps the plain names, the others a
    suffix."""

    def view(cls: type, **initkwargs: Any) -> Any:
        return versioned(cls, version).as_view(**initkwargs)

    suffix = "" if version == CANONICAL else f"-{version}"
    party = "<str:country_code>/<str:party_id>"
    receivers = [
        path(f"locations/{party}/<str:location_id>", view(LocationView), name=f"location{suffix}"),
        path(f"locations/{party}/<str:location_id>/<str:evse_uid>", view(EvseView), name=f"evse{suffix}"),
        path(
            f"locations/{party}/<str:location_id>/<str:evse_uid>/<str:connector_id>",
            view(ConnectorView),
            name=f"connector{suffix}",
        ),
        path(f"sessions/{party}/<str:session_id>", view(SessionReceiverView), name=f"session{suffix}"),
        path(f"tariffs/{party}/<str:tariff_id>", view(TariffReceiverView), name=f"tariff{suffix}"),
        path("cdrs", view(CdrReceiverView), name=f"cdrs{suffix}"),
        # A CDR id may hold a `/` (printable ASCII); our Location header percent-encodes it (cdr_url).
        path(f"cdrs/{party}/<rest:cdr_id>", view(CdrDetailView), name=f"cdr{suffix}"),
        path("tokens", view(TokenListView), name=f"tokens{suffix}"),
        path("tokens/<str:token_uid>/authorize", view(TokenAuthorizeView), name=f"token-authorize{suffix}"),
        # A legacy token's uid may hold a `/` (new ones are refused, emsp/models/drivers.py), sent as %2F, which
        # WSGI decodes before routing: the uid is then the path up to its last /authorize. Tried only where the
        # route above matched nothing (so it shadows no route), and left out of the schema: the same operation.
        path(
            "tokens/<rest:token_uid>/authorize",
            view(TokenAuthorizeView, ids_may_hold_a_slash=True, schema=None),
            name=f"token-authorize{suffix}",
        ),
        path("commands/<str:command>/<str:uid>", view(CommandResultView), name=f"command-result{suffix}"),
    ]
    if version in HUB_CLIENT_INFO_VERSIONS:
        # HubClientInfo receiver (mod_hub_client_info, OCPI 2.2 onwards): the same ClientInfo in 2.2.1 and 2.3.0.
        receivers.append(path(f"hubclientinfo/{party}", view(HubClientInfoView), name=f"hubclientinfo{suffix}"))
    return receivers + _glued(receivers)


def _glued(patterns: list[URLPattern]) -> list[URLPattern]:
    """extrawest-ocpi (PyPI) pushes to f"{endpoint_url}{country_code}/{party_id}/{id}": on our endpoint URLs,
    which don't end with a slash, that glues the party to the module (`…/locationsIN/EWX/LOC1`). Lenient in:
    the same receivers answer that form too (docs/interop.md), left out of the OpenAPI schema."""
    glued = []
    for pattern in patterns:
        route = str(pattern.pattern)
        view = pattern.callback
        for module, start in GLUED.items():
            if route.startswith(start):
                unlisted = view.cls.as_view(**{**view.initkwargs, "schema": None})
                glued.append(path(route.replace(f"{module}/", module, 1), unlisted))
    return glued


# The routes answered glued too, by module. mod_tokens itself writes the authorize URL as
# `{tokens_endpoint_url}{token_uid}/authorize`, without a slash: a CPO joining the strings as written gets there.
GLUED = {
    "locations": "locations/<str:country_code>/",
    "sessions": "sessions/<str:country_code>/",
    "tariffs": "tariffs/<str:country_code>/",
    "tokens": "tokens/<str:token_uid>/",
}


# Each version's URLs sit behind its own prefix, so a request is matched against one version's patterns, not
# tried against every version's in turn (URL resolving was 8 % of an EVSE PATCH's CPU).
urlpatterns = [path("versions", VersionsView.as_view(), name="versions")]
for _version in SUPPORTED:
    _suffix = "" if _version == CANONICAL else f"-{_version}"
    urlpatterns += [
        path(_version, versioned(VersionDetailsView, _version).as_view(), name=f"version-details{_suffix}"),
        path(f"{_version}/credentials", versioned(CredentialsView, _version).as_view(), name=f"credentials{_suffix}"),
        path(f"emsp/{_version}/", include(_receiver_urls(_version))),
    ]
