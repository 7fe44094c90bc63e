"""Which adapter collects which currency is a setting (PAYMENT_GATEWAYS), and adapters are built from their options."""

from __future__ import annotations

from django.test import override_settings

from billing.payments.gateway import gateway_for, provider_for
from billing.payments.razorpay_gateway import RazorpayGateway
from billing.payments.stripe_gateway import StripeGateway


def test_it_collects_rupees_through_razorpay_and_euros_through_stripe() -> None:
    assert isinstance(gateway_for("INR"), RazorpayGateway)
    assert isinstance(gateway_for("inr"), RazorpayGateway)
    assert isinstance(gateway_for("EUR"), StripeGateway)
    assert provider_for("USD") == "stripe"


def test_the_table_is_a_setting() -> None:
    with override_settings(PAYMENT_GATEWAYS={"EUR": "razorpay", "*": "stripe"}):
        assert isinstance(gateway_for("EUR"), RazorpayGateway)
        assert isinstance(gateway_for("INR"), StripeGateway)


def test_the_adapters_point_at_the_configured_api_base() -> None:
    providers = {
        "stripe": {
            "adapter": "billing.payments.stripe_gateway.StripeGateway",
            "options": {"api_key": "sk_test_x", "webhook_secret": "whsec_x", "api_base": "http://127.0.0.1:9/stripe"},
        },
        "razorpay": {
            "adapter": "billing.payments.razorpay_gateway.RazorpayGateway",
            "options": {
                "key_id": "rzp_test_x",
                "key_secret": "s",
                "webhook_secret": "w",
                "api_base": "http://127.0.0.1:9/razorpay/v1",
            },
        },
    }
    with override_settings(PAYMENT_PROVIDERS=providers):
        razorpay = gateway_for("INR")
        stripe = gateway_for("EUR")
    assert razorpay.client.base_url == "http://127.0.0.1:9/razorpay"  # the SDK adds /v1 itself
    assert stripe.client._requestor._options.base_addresses["api"] == "http://127.0.0.1:9/stripe"
