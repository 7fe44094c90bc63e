"""Drivers: finding the account of a driver an app brings us (by email, else phone) or opening one, and the
app token their charges are started with."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from emsp.key_locks import keys_locked
from emsp.models import Driver, Partner, Token
from emsp.services.tokens import token_issue


class DriverCannotCharge(Exception):
    """The driver's token is not allowed to charge there: `allowed` says why (an OCPI AllowedType word)."""

    def __init__(self, allowed: str) -> None:
        super().__init__(f"this driver cannot charge here: {allowed}")
        self.allowed = allowed


def driver_for_contact(*, app_id: str, email: str = "", phone: str = "", name: str = "") -> Driver:
    """The app's driver with this email (case-insensitive), else with this phone, else a new account of the
    app's. Accounts of other apps are never matched: an app can't reach another's drivers by their contact."""
    email = email.strip().lower()
    phone = phone.strip()
    if not (email or phone):
        raise ValueError("a driver needs an email or a phone number")
    accounts = Driver.objects.filter(app_id=app_id, erased_at__isnull=True)
    driver = _account_of(accounts, email, phone)
    if driver is None:
        _contact_locked(app_id, email, phone)
        driver = _account_of(accounts, email, phone)  # opened meanwhile by the holder of that lock
    if driver is None:
        driver = Driver.objects.create(app_id=app_id, name=name.strip() or email or phone, email=email, phone=phone)
    return driver


def _account_of(accounts: QuerySet[Driver], email: str, phone: str) -> Driver | None:
    driver = accounts.filter(email__iexact=email).first() if email else None
    if driver is None and phone:
        driver = accounts.filter(phone=phone).first()
    return driver


def _contact_locked(app_id: str, email: str, phone: str) -> None:
    """Hold the app's contact details about to open an account until the transaction ends (emsp/key_locks.py).
    Two inits of a new driver at the same moment (two journeys of the app's) had each found no account and each
    opened one: the second now waits for the first and finds its account. Taken only when no account was found,
    so a known driver's init costs nothing more."""
    keys = [f"driver:{app_id}|email:{email}"] if email else []
    keys += [f"driver:{app_id}|phone:{phone}"] if phone else []
    keys_locked(*keys)


def driver_app_token(driver: Driver, *, partner: Partner, now: datetime | None = None) -> Token:
    """The driver's APP_USER token (issued on first use), checked as real-time authorization at `partner`
    would check it. Raises DriverCannotCharge."""
    token = driver.tokens.filter(type=Token.Type.APP_USER, valid=True, is_blocked=False).order_by("pk").first()
    if token is None:
        token = token_issue(driver=driver, token_type=Token.Type.APP_USER)
    allowed = token.allowed_status(now or timezone.now(), partner)
    if allowed != Token.Allowed.ALLOWED:
        raise DriverCannotCharge(allowed)
    return token
