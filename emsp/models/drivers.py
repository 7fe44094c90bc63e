"""Our drivers and their OCPI tokens."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from emsp.models.keys import ci_key
from emsp.models.partners import Partner


class Driver(models.Model):
    """A driver account of ours: the owner of tokens and of Beckn orders. An account opened through a
    consumer app belongs to that app (`app_id`, its Beckn bap_id): another app finds neither it nor its orders,
    even for the same email or phone."""

    app_id = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="The consumer app (Beckn bap_id) the account is of."
    )
    name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    erased_at = models.DateTimeField(
        null=True, blank=True, help_text="Personal data erased (manage.py driver_erase); money records kept."
    )
    is_blocked = models.BooleanField(default=False)
    wallet_balance = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Prepaid balance; empty for post-paid accounts. At or below zero the driver has NO_CREDIT.",
    )
    wallet_limit = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("0"),
        help_text="The lowest a prepaid balance may go once a charge is authorised (0: no overdraft).",
    )
    currency = models.CharField(max_length=3, default="INR")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def has_credit(self) -> bool:
        return self.wallet_balance is None or self.wallet_balance > Decimal("0")


class TokenQuerySet(models.QuerySet["Token"]):
    def by_uid(self, uid: str, token_type: str | None = None) -> TokenQuerySet:
        qs = self.filter(uid_key=ci_key(uid))
        return qs.filter(type=token_type) if token_type else qs


# mod_tokens: uid, contract_id and group_id are CiString(36), "only printable ASCII allowed" (types.asciidoc); no
# space at either end (ids are compared stripped). A console edit had pushed a uid "Ä€ b/x" to every CPO.
ocpi_ci_string = RegexValidator(
    r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?\Z",
    "Only printable ASCII, with no space at either end (OCPI CiString).",
)
# A uid is a segment of the URLs a CPO calls us on (…/tokens/{token_uid}/authorize): a `/` in it, sent encoded
# (%2F), finds no route and is refused (ocpi/transport.py), so a token issued with one could never be authorized.
token_uid_without_slash = RegexValidator(
    r"/", "No '/': a CPO could not ask us to authorize the token (its uid is part of the URL).", inverse_match=True
)
# mod_tokens: language is string(2), "Language Code ISO 639-1" (lower-case, as the spec's own examples).
iso_639_1_code = RegexValidator(r"^[a-z]{2}\Z", "Two lower-case letters: an ISO 639-1 language code (en, hi).")


@functools.cache
def iso_639_1_codes() -> frozenset[str]:
    """The 184 two-letter codes of ISO 639-1 (pycountry's table): "zz" has the shape and is no language."""
    import pycountry  # imported when first asked: only token edits and token pushes read it

    return frozenset(language.alpha_2 for language in pycountry.languages if hasattr(language, "alpha_2"))


def known_iso_639_1_code(value: str) -> None:
    """A language a CPO's app can show texts in: one of ISO 639-1's codes, not only two letters."""
    if value and value not in iso_639_1_codes():
        raise ValidationError(f"{value!r} is not an ISO 639-1 language code (en, hi, ta…).")


def ocpi_string(value: str) -> None:
    """OCPI `string`: "printable UTF-8 characters" (types.asciidoc) — a tab or a line break is not one."""
    if not value.isprintable():
        raise ValidationError("Printable characters only: no tab, line break or other control character.")


class Token(models.Model):
    """One of our OCPI Tokens (mod_tokens §"Token object"). Unique by (uid, type)."""

    class Type(models.TextChoices):
        AD_HOC_USER = "AD_HOC_USER"
        APP_USER = "APP_USER"
        OTHER = "OTHER"
        RFID = "RFID"

    class Whitelist(models.TextChoices):
        ALWAYS = "ALWAYS"
        ALLOWED = "ALLOWED"
        ALLOWED_OFFLINE = "ALLOWED_OFFLINE"
        NEVER = "NEVER"

    class Allowed(models.TextChoices):
        ALLOWED = "ALLOWED"
        BLOCKED = "BLOCKED"
        EXPIRED = "EXPIRED"
        NO_CREDIT = "NO_CREDIT"
        NOT_ALLOWED = "NOT_ALLOWED"

    driver = models.ForeignKey(Driver, on_delete=models.PROTECT, related_name="tokens")
    uid = models.CharField(max_length=36, validators=[ocpi_ci_string, token_uid_without_slash])
    uid_key = models.CharField(max_length=36, editable=False)
    type = models.CharField(max_length=12, choices=Type.choices, default=Type.RFID)
    contract_id = models.CharField(max_length=36, validators=[ocpi_ci_string])
    visual_number = models.CharField(max_length=64, blank=True, validators=[ocpi_string])
    issuer = models.CharField(max_length=64, validators=[ocpi_string])
    group_id = models.CharField(max_length=36, blank=True, validators=[ocpi_ci_string])
    valid = models.BooleanField(default=True)
    whitelist = models.CharField(max_length=16, choices=Whitelist.choices, default=Whitelist.ALLOWED)
    language = models.CharField(max_length=2, blank=True, validators=[iso_639_1_code, known_iso_639_1_code])
    is_blocked = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_partners = models.ManyToManyField(
        Partner,
        blank=True,
        help_text="If any are set, the token may only charge at these partners (else NOT_ALLOWED).",
    )
    last_updated = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["uid_key", "type"], name="token_unique_uid_type")]
        # The minute's sweep of tokens past their expiry (emsp/services/tokens.py::tokens_expired_push) reads only
        # tokens that have one.
        indexes = [
            models.Index(fields=["expires_at"], name="token_expires_at", condition=models.Q(expires_at__isnull=False))
        ]

    def __str__(self) -> str:
        return f"{self.uid} ({self.type})"

    def save(self, *args: object, **kwargs: object) -> None:
        self.uid_key = ci_key(self.uid)
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        # The database's token_unique_uid_type is on uid_key, which no form holds, so a form's own unique checks
        # skip it: a uid taken (in any case) was an IntegrityError, a 500.
        if self.uid and self.type and Token.objects.by_uid(self.uid, self.type).exclude(pk=self.pk).exists():
            raise ValidationError({"uid": f"A {self.type} token with this uid (in any case) exists already."})

    def allowed_status(self, now: datetime, partner: Partner | None = None) -> str:
        """The AllowedType real-time authorization answers for this token (mod_tokens §AllowedType)."""
        if self.is_blocked or not self.valid or self.driver.is_blocked:
            return self.Allowed.BLOCKED
        if self.expires_at is not None and self.expires_at <= now:
            return self.Allowed.EXPIRED
        if not self.driver.has_credit():
            return self.Allowed.NO_CREDIT
        if partner is not None:
            if hasattr(self, "is_restricted"):  # read with the token by real-time authorization's query
                restricted, allowed_here = self.is_restricted, self.allowed_here
            else:
                partner_ids = {p.pk for p in self.allowed_partners.all()}
                restricted, allowed_here = bool(partner_ids), partner.pk in partner_ids
            if restricted and not allowed_here:
                return self.Allowed.NOT_ALLOWED
        return self.Allowed.ALLOWED
