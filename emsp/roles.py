"""Staff roles as data: the admin, ops and finance groups and exactly the permissions each one holds.

`roles_setup()` makes the database match this file (used by the `emsp` roles migration and by
`manage.py setup_roles`); run the command again after adding models so the admin group picks up theirs.
"""

from __future__ import annotations

from typing import Any

# Reading a partner's credentials (tokens we send, hashes of tokens we accept) is its own permission so that
# "may look at a partner" never implies "may see how we authenticate with it". Partner admin pages key on it.
# It is created here rather than in Partner.Meta so that it needs no schema migration.
VIEW_PARTNER_CREDENTIALS = "emsp.view_partner_credentials"
# Pulling a partner's data now (the console's *pull now*) calls the CPO and rewrites our catalogue: an
# operational act of its own, neither "change the partner" (which ops may not) nor merely "view" it.
PULL_PARTNER = "emsp.pull_partner"
EXTRA_PERMISSIONS = (
    ("emsp", "partner", "view_partner_credentials", "Can view partner credentials"),
    ("emsp", "partner", "pull_partner", "Can pull a partner's data now"),
    # Reading /metrics in the browser (Prometheus itself uses METRICS_TOKEN): partners' traffic and errors.
    ("emsp", "partner", "view_metrics", "Can read the Prometheus metrics"),
)

ADMIN, OPS, FINANCE = "admin", "ops", "finance"

# Every permission that exists, custom ones included: the platform's administrators (user management too).
# Only they read the audit trail of staff actions (emsp.view_staffaction): it watches the other roles.
ALL = "*"

ROLES: dict[str, tuple[str, ...] | str] = {
    ADMIN: ALL,
    # Ops keeps the connections to CPOs running and works CDR disputes. It reads the partners' data and the
    # OCPI plumbing, and changes nothing but disputes (each change leaves a DisputeEvent); it sends a stuck
    # delivery again, pulls a partner now, and works reconciliation's findings on bookings.
    OPS: (
        "emsp.view_partner",
        PULL_PARTNER,
        "emsp.view_metrics",
        "emsp.view_location",
        "emsp.view_evse",
        "emsp.view_connector",
        "emsp.view_chargingsession",
        "emsp.view_command",
        # Bookings and reconciliation's findings on them: checked again and resolved by ops.
        "emsp.view_booking",
        "emsp.view_bookingcheck",
        "emsp.recheck_bookingcheck",
        "billing.view_tariff",
        "billing.view_cdr",
        "billing.view_cdraudit",
        "billing.view_dispute",
        "billing.change_dispute",
        "billing.view_disputeevent",
        "billing.add_disputeevent",
        "ocpi.view_ocpimessage",
        "ocpi.view_syncrun",
        "ocpi.view_dataqualityissue",
        "ocpi.view_pushdelivery",
        "emsp.view_delivery",
        "emsp.view_deliveryattempt",
        "emsp.retry_delivery",
        "beckn.view_driverfeedback",
    ),
    # Finance reconciles, exports and closes settlement periods and reads what stands behind them.
    FINANCE: (
        "emsp.view_partner",
        "emsp.view_booking",  # what a ledger entry or payment was for
        "billing.view_settlement",
        "billing.change_settlement",
        "billing.export_settlement",
        "billing.view_cdr",
        "billing.view_cdraudit",
        "billing.view_dispute",
        "billing.view_disputeevent",
        "billing.view_driverreceipt",
        "billing.view_tariff",
        "billing.view_partnerterms",
        # The money (issue 12): the ledger, payments and their webhooks; retrying a provider call; the numbered
        # documents, which finance issues (never changes).
        "billing.view_ledgeraccount",
        "billing.view_ledgerentry",
        "billing.view_payment",
        "billing.change_payment",
        "billing.view_paymentoperation",
        "billing.view_providerwebhook",
        "billing.view_bapagreement",
        "billing.view_issueddocument",
        "billing.add_issueddocument",
        "billing.view_payoutreconciliation",
    ),
}


class RoleSetupError(Exception):
    """A permission named in ROLES does not exist (a typo, or its app's migrations have not run)."""


def roles_setup(*, apps: Any = None, strict: bool = True) -> dict[str, int]:
    """Create or update the groups so each holds exactly its ROLES permissions; returns the count per group.

    Idempotent, and it converges: permissions added to a group by hand are removed again. `apps` is the
    historical app registry when called from a migration; there `strict=False` skips permissions of models
    that a later migration creates (a fresh database runs this migration before those exist), and the
    command, always strict, completes the groups.
    """
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    content_type_model = apps.get_model("contenttypes", "ContentType")

    for app_label, model, codename, name in EXTRA_PERMISSIONS:
        content_type, _ = content_type_model.objects.get_or_create(app_label=app_label, model=model)
        permission_model.objects.get_or_create(content_type=content_type, codename=codename, defaults={"name": name})

    counts: dict[str, int] = {}
    for group_name, wanted in ROLES.items():
        if wanted == ALL:
            permissions = list(permission_model.objects.all())
        else:
            found = [_permission(permission_model, label, strict=strict) for label in wanted]
            permissions = [p for p in found if p is not None]
        group, _ = group_model.objects.get_or_create(name=group_name)
        group.permissions.set(permissions)
        counts[group_name] = len(permissions)
    return counts


def _permission(permission_model: Any, label: str, *, strict: bool) -> Any:
    app_label, codename = label.split(".", 1)
    permission = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
    if permission is None and strict:
        raise RoleSetupError(f"permission {label} does not exist")
    return permission
