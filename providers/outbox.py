"""The outbox: the embedded default sender, for which nothing leaves the machine."""

from __future__ import annotations

from collections import deque

from patient_drip.providers.types import Channel, OutgoingMessage

RECORDED = 100


class OutboxSender:
    """The embedded default: nothing leaves the machine.

    The dispatcher already stores the rendered message with its send record (that is what the
    staff UI shows), so this sender only hands back a deterministic id. Reconciliation knows an
    `outbox` send can safely be redone. Messages that have no send record (a staff password-reset
    email, a crisis alert) are visible only in `recorded`: the last 100 messages handed to this
    sender, in this process.
    """

    provider = "outbox"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.recorded: deque[OutgoingMessage] = deque(maxlen=RECORDED)

    def send(self, message: OutgoingMessage) -> str:
        """Return ``outbox-<message_id>``; raises ValueError if the channel does not match."""
        if message.channel != self.channel:
            raise ValueError(f"{self.channel} outbox cannot send a {message.channel} message")
        self.recorded.append(message)
        return f"outbox-{message.message_id}"
