"""OCPI's part of personal data (emsp/privacy.py): the message log holds bodies that name a driver's tokens
(our token pushes, sessions, CDRs); on erasure those bodies go, and the whole log goes with its retention,
as do pull runs and data-quality findings."""

from __future__ import annotations

from django.db.models import Q

from emsp import privacy
from emsp.models import Driver
from ocpi.models import DataQualityIssue, OcpiMessage, PushDelivery, SyncRun


def _erase(driver: Driver) -> dict[str, int]:
    uids = [uid for uid in driver.tokens.values_list("uid", flat=True) if uid]
    mentions = Q()
    for uid in uids:
        mentions |= Q(request_body__contains=uid) | Q(response_body__contains=uid)
    if not uids:
        return {"log_bodies_erased": 0, "pushes_scrubbed": 0}
    erased = OcpiMessage.objects.filter(mentions).update(request_body="[erased]", response_body="[erased]")
    # The token pushes still kept hold the token as it was then, visual number included.
    scrubbed = 0
    for push in PushDelivery.objects.filter(module="tokens", payload__uid__in=uids).only("pk", "payload"):
        if isinstance(push.payload, dict) and push.payload.pop("visual_number", None) is not None:
            PushDelivery.objects.filter(pk=push.pk).update(payload=push.payload)
            scrubbed += 1
    return {"log_bodies_erased": erased, "pushes_scrubbed": scrubbed}


EXPIRING = (
    privacy.Expiry("ocpi_messages", "ocpi_messages", lambda since: OcpiMessage.objects.filter(created_at__lt=since)),
    privacy.Expiry("sync_runs", "sync_runs", lambda since: SyncRun.objects.filter(started_at__lt=since)),
    # A finding not seen again for its retention (fixed at the CPO, or the object gone).
    privacy.Expiry("data_quality", "data_quality", lambda since: DataQualityIssue.objects.filter(last_seen__lt=since)),
)


def register() -> None:
    privacy.register("ocpi", erase=_erase, expiring=EXPIRING)
