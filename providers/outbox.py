"""The outbox: the embedded default sender, for which nothing leaves the machine."""

from __future__ import annotations

from patient_drip.providers.types import Channel, OutgoingMessage


class OutboxSender:
    """The embedded default: nothing leaves the machine.

    The dispatcher already stores the rendered message with its send record (that is what the
    staff UI shows), so this sender only hands back a deterministic id. Reconciliation knows an
    `outbox` send can safely be redone.
    """

    provider = "outbox"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, message: OutgoingMessage) -> str:
        """Return ``outbox-<message_id>``; raises ValueError if the channel does not match."""
        if message.channel != self.channel:
            raise ValueError(f"{self.channel} outbox cannot send a {message.channel} message")
        return f"outbox-{message.message_id}"
