"""The development broker (no server): kombu's filesystem transport, with each message file written whole.

kombu's filesystem transport creates a message file under its final name, then locks it and writes. A worker
polling the folder moves and reads the files it finds without taking that lock, so it can read a file between
its creation and its write: it reads nothing, and its consumer dies on the JSON error ("Expecting value: line 1
column 1"), taking the worker down. CI's smoke run of `manage.py run_platform` met this ("worker-latency
stopped"). Here the message is written under a name no reader looks for and then renamed into place, which is
atomic within one file system. Settings select it with CELERY_BROKER_TRANSPORT when no broker URL is given.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".part"  # a reader takes only names ending in ".<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put `payload` onto `queue`: written to a partial file, then renamed to the name readers look for."""
        filename = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, filename)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
