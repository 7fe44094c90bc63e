from __future__ import annotations

from django.apps import AppConfig


class EmspConfig(AppConfig):
    verbose_name = "eMSP domain"
    name = "emsp"

    def ready(self) -> None:
        from django.core import checks as system_checks
        from django.db.backends.signals import connection_created

        from emsp import celery, checks, events, pg_loaders, safe_defaults  # noqa: F401 - loading the Celery app binds every shared_task to it
        from emsp.services import bookings

        connection_created.connect(pg_loaders.register, dispatch_uid="emsp.pg_loaders")
        # Retention figures that would delete what must be kept (or prune nothing) stop a deploy (emsp/checks.py).
        system_checks.register(checks.retention_settings)
        # So does an OCPI identity a partner would refuse (our party, business name, a base URL too long).
        system_checks.register(safe_defaults.identity_settings)
        # The CPO's side moves bookings on: a failed charger or a cancelled reservation cancels them.
        events.subscribe(events.EvseStatusChanged, bookings.on_evse_status_changed)
        events.subscribe(events.ReservationCancelledByCpo, bookings.on_reservation_cancelled_by_cpo)
        # A start asked for while the reservation was being made goes out once the CPO has answered it.
        events.subscribe(events.CommandFinished, bookings.on_reservation_finished)
