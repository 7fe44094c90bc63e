"""OCPI URLs: versions at /ocpi/versions; per version (2.1.1, 2.2.1, 2.3.0) version details at /ocpi/{version},
credentials at /ocpi/{version}/credentials, our modules under /ocpi/emsp/{version}/ (ocpi/versions/)."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path

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


def _version_urls(version: str) -> list[URLPattern]:
    """One version's URLs: version details at /ocpi/{version}, credentials below it, our receivers under
    /ocpi/emsp/{version}/ (the same layout in 2.1.1, 2.2.1 and 2.3.0: every receiver takes
    {country_code}/{party_id} in its path since 2.1.1). 2.2.1 keeps the plain names, the others a suffix."""

    def view(cls: type) -> Any:
        return versioned(cls, version).as_view()

    suffix = "" if version == CANONICAL else f"-{version}"
    emsp = f"emsp/{version}"
    object_path = "<str:country_code>/<str:party_id>"
    return [
        path(version, view(VersionDetailsView), name=f"version-details{suffix}"),
        path(f"{version}/credentials", view(CredentialsView), name=f"credentials{suffix}"),
        path(f"{emsp}/locations/{object_path}/<str:location_id>", view(LocationView), name=f"location{suffix}"),
        path(
            f"{emsp}/locations/{object_path}/<str:location_id>/<str:evse_uid>",
            view(EvseView),
            name=f"evse{suffix}",
        ),
        path(
            f"{emsp}/locations/{object_path}/<str:location_id>/<str:evse_uid>/<str:connector_id>",
            view(ConnectorView),
            name=f"connector{suffix}",
        ),
        path(f"{emsp}/sessions/{object_path}/<str:session_id>", view(SessionReceiverView), name=f"session{suffix}"),
        path(f"{emsp}/tariffs/{object_path}/<str:tariff_id>", view(TariffReceiverView), name=f"tariff{suffix}"),
        path(f"{emsp}/cdrs", view(CdrReceiverView), name=f"cdrs{suffix}"),
        path(f"{emsp}/cdrs/{object_path}/<str:cdr_id>", view(CdrDetailView), name=f"cdr{suffix}"),
        path(f"{emsp}/tokens", view(TokenListView), name=f"tokens{suffix}"),
        path(f"{emsp}/tokens/<str:token_uid>/authorize", view(TokenAuthorizeView), name=f"token-authorize{suffix}"),
        path(f"{emsp}/commands/<str:command>/<str:uid>", view(CommandResultView), name=f"command-result{suffix}"),
    ]


urlpatterns = [path("versions", VersionsView.as_view(), name="versions")]
for _version in SUPPORTED:
    urlpatterns += _version_urls(_version)
# HubClientInfo receiver (mod_hub_client_info, OCPI 2.2 onwards): the same ClientInfo in 2.2.1 and 2.3.0.
urlpatterns += [
    path(
        f"emsp/{v}/hubclientinfo/<str:country_code>/<str:party_id>",
        versioned(HubClientInfoView, v).as_view(),
        name="hubclientinfo" if v == CANONICAL else f"hubclientinfo-{v}",
    )
    for v in HUB_CLIENT_INFO_VERSIONS
]


def _glued(patterns: list[URLPattern]) -> list[URLPattern]:
    """extrawest-ocpi (PyPI) pushes to f"{endpoint_url}{country_code}/{party_id}/{id}": on our endpoint URLs,
    which don't end with a slash, that glues the party to the module (`…/locationsIN/EWX/LOC1`). Lenient in:
    the same receivers answer that form too (docs/interop.md), left out of the OpenAPI schema."""
    glued = []
    for pattern in patterns:
        route = str(pattern.pattern)
        view = pattern.callback
        for module in ("locations", "sessions", "tariffs"):
            if f"/{module}/<str:country_code>/" in route:
                unlisted = view.cls.as_view(**{**view.initkwargs, "schema": None})
                glued.append(path(route.replace(f"/{module}/", f"/{module}", 1), unlisted))
    return glued


urlpatterns += _glued(urlpatterns)
