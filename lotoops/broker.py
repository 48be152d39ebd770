"""The embedded default's broker: kombu's filesystem transport, made atomic.

kombu's own `_put` creates the message file and then writes it, so a worker
polling the folder can open a file that is still empty and die with
`JSONDecodeError` (kombu issue #1551). Here a message is written to a name the
readers never pick (`*.part`), closed, then renamed into place:
`os.replace` in one folder is atomic, so a reader sees a whole message or none.

Registered as the `lotoopsfs://` transport (see lotoops/celery.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "lotoopsfs"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put the message on `queue`: whole, or not at all."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Readers take only "<stamp>_<uuid>.<queue>.msg": a ".part" file is never read.
        partial = os.path.join(self.data_folder_out, f"incoming-{uuid.uuid4()}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            # Other processes read through the same page cache: the rename alone makes
            # the whole message visible at once (no fsync: that guards power loss, at
            # a cost of milliseconds per message the embedded default does not pay).
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES[SCHEME] = "lotoops.broker:Transport"
