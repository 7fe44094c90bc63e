"""Top-level URLs: admin console, OCPI, Beckn, API docs."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from emsp.metrics import metrics_view

admin.site.site_header = "eMSP console"
admin.site.site_title = "eMSP console"
admin.site.index_title = "Network at a glance"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ocpi/", include("ocpi.urls")),
    path("beckn/", include("beckn.urls")),
    path("payments/", include("billing.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Prometheus (emsp/metrics.py): a staff session here; a scraper's bearer token is answered by the middleware.
    path("metrics", metrics_view, name="metrics"),
]

# Below /ocpi/ and /beckn/ a client gets its protocol's error, not an HTML page (emsp/error_views.py).
handler404 = "emsp.error_views.not_found"
handler500 = "emsp.error_views.server_error"
