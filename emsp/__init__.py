"""The eMSP domain (partners, catalogue, drivers, tokens, bookings, sessions, commands, the outbox) and the
project's settings. The Celery app (emsp/celery.py) is loaded by EmspConfig.ready() and by `celery -A emsp`."""
