from __future__ import annotations

from django.apps import AppConfig


class OcpiConfig(AppConfig):
    verbose_name = "OCPI 2.2.1"
    name = "ocpi"

    def ready(self) -> None:
        from datetime import timedelta

        from django.conf import settings

        from emsp import error_views, outbox, ports
        from emsp.models import Delivery
        from ocpi import error_answers, metrics, privacy, push
        from ocpi.gateway import OcpiGateway
        from ocpi.normalize import datetimes

        # The domain reaches CPOs through this port, and its outbox sends our pushes with this sender.
        ports.register_cpo_gateway(OcpiGateway())
        outbox.register_sender(Delivery.Channel.OCPI_PUSH, push.send_push)
        privacy.register()  # the message log in erasure and retention
        metrics.register()  # sync lag per partner and module in /metrics (emsp/metrics.py)
        error_views.register(error_answers.ERRORS)  # an unknown path below /ocpi/ answers in the envelope
        # The normaliser is pure: the clock skew it allows partners comes from the settings once, here.
        datetimes.future_skew = timedelta(seconds=settings.OCPI_MAX_CLOCK_SKEW_SECONDS)
