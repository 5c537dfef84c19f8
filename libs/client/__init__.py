"""sluice's Python client: create streams, read them with automatic resume, steer them.

The async :class:`Client` is the whole API; :class:`SyncClient` wraps it for scripts
that have no event loop. :mod:`libs.client.http` holds the raw calls beneath.
"""

from libs.client.control import ControlError
from libs.client.events import Done, Reconnecting, Status, StreamEvent, Token
from libs.client.stream import Client, Stream, StreamFailed
from libs.client.sync import SyncClient

__all__ = [
    "Client",
    "ControlError",
    "Done",
    "Reconnecting",
    "Status",
    "Stream",
    "StreamEvent",
    "StreamFailed",
    "SyncClient",
    "Token",
]
