from __future__ import annotations

from django.apps import AppConfig


class BecknConfig(AppConfig):
    name = "beckn"

    def ready(self) -> None:
        from beckn import callbacks, error_answers, events, privacy
        from emsp import error_views, outbox
        from emsp.models import Delivery

        # The driver's app hears what the domain publishes; the outbox sends our callbacks with this sender.
        events.subscribe()
        outbox.register_sender(Delivery.Channel.BECKN_CALLBACK, callbacks.send_callback)
        privacy.register()  # a driver's journeys and ratings in export, erasure and retention
        error_views.register(error_answers.ERRORS)  # a BAP's POST to no action of ours is a NACK
