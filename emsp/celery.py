"""The Celery application. Tasks live in each app's tasks.py; the beat schedule is in emsp/settings.py."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from django.db import transaction
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emsp.settings")

app = Celery("emsp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def run_after_commit(task_path: str, *args: Any, countdown: float | None = None) -> None:
    """Queue the task at `task_path` (e.g. "emsp.tasks.command_send") once the current transaction commits.
    Services name their tasks rather than import the tasks modules, which import the services."""

    def queue() -> None:
        task = import_string(task_path)
        if countdown is None:
            task.delay(*args)
        else:
            task.apply_async(args, countdown=countdown)

    transaction.on_commit(queue)
