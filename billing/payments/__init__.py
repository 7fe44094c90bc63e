"""Payment providers behind one small port (billing/payments/gateway.py); one adapter per provider, built on the
provider's own SDK. Nothing here touches the database: billing/services/payments.py drives a booking's money
through these and posts the ledger."""
