"""OCPI 2.2.1 URLs: versions at /ocpi/versions, version details at /ocpi/2.2.1, modules under /ocpi/emsp/2.2.1/."""

from __future__ import annotations

from django.urls import path

from ocpi.views.cdrs import CdrDetailView, CdrReceiverView
from ocpi.views.commands import CommandResultView
from ocpi.views.credentials import CredentialsView
from ocpi.views.locations import ConnectorView, EvseView, LocationView
from ocpi.views.sessions import SessionReceiverView
from ocpi.views.tariffs import TariffReceiverView
from ocpi.views.tokens import TokenAuthorizeView, TokenListView
from ocpi.views.versions import VersionDetailsView, VersionsView

app_name = "ocpi"

urlpatterns = [
    path("versions", VersionsView.as_view(), name="versions"),
    path("2.2.1", VersionDetailsView.as_view(), name="version-details"),
    path("2.2.1/credentials", CredentialsView.as_view(), name="credentials"),
    path(
        "emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>",
        LocationView.as_view(),
        name="location",
    ),
    path(
        "emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>/<str:evse_uid>",
        EvseView.as_view(),
        name="evse",
    ),
    path(
        "emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>/<str:evse_uid>/<str:connector_id>",
        ConnectorView.as_view(),
        name="connector",
    ),
    path(
        "emsp/2.2.1/sessions/<str:country_code>/<str:party_id>/<str:session_id>",
        SessionReceiverView.as_view(),
        name="session",
    ),
    path(
        "emsp/2.2.1/tariffs/<str:country_code>/<str:party_id>/<str:tariff_id>",
        TariffReceiverView.as_view(),
        name="tariff",
    ),
    path("emsp/2.2.1/cdrs", CdrReceiverView.as_view(), name="cdrs"),
    path("emsp/2.2.1/cdrs/<str:country_code>/<str:party_id>/<str:cdr_id>", CdrDetailView.as_view(), name="cdr"),
    path("emsp/2.2.1/tokens", TokenListView.as_view(), name="tokens"),
    path("emsp/2.2.1/tokens/<str:token_uid>/authorize", TokenAuthorizeView.as_view(), name="token-authorize"),
    path("emsp/2.2.1/commands/<str:command>/<str:uid>", CommandResultView.as_view(), name="command-result"),
]
