"""WSGI entry point (gunicorn emsp.wsgi): Django, wrapped by the WSGI_WRAPPERS of the settings (outermost last),
such as the Beckn ACK's fast lane (beckn/ack_lane.py)."""

from __future__ import annotations

import gc
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emsp.settings")
django_application = get_wsgi_application()

application = django_application
for _wrapper in settings.WSGI_WRAPPERS:
    application = import_string(_wrapper)(application)
if settings.SENTRY_DSN:
    # The lanes answer some requests without Django's handler, which Sentry's Django integration hooks to give
    # each request its own scope (its breadcrumbs, the request's URL on a report). Sentry's WSGI middleware, around
    # everything, does that for every request; under it the integration's own is not applied a second time.
    from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

    application = SentryWsgiMiddleware(application)

# What loading made (modules, URL patterns, models: some 117,000 objects) lives as long as the process. Frozen,
# the garbage collector stops walking it: a full collection, which the collector runs now and then in the
# middle of some request, took 65 ms in a loaded process here before and 0.004 ms after.
gc.freeze()
