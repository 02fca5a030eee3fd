"""The one exception hierarchy of callpulse."""

from __future__ import annotations


class CallpulseError(Exception):
    """Base of every error callpulse raises on purpose."""


class SettingsError(CallpulseError):
    """A setting (env, flag or TOML) is missing or wrong; start-up stops."""


class InvalidEvent(CallpulseError):
    """An event failed validation; it goes to the deadletter topic, not the windows."""

    def __init__(self, reason: str, *, event_type: str | None = None, event_id: str | None = None) -> None:
        self.reason = reason
        self.event_type = event_type
        self.event_id = event_id
        prefix = "invalid event"
        if event_type:
            prefix += f" {event_type!r}"
        if event_id:
            prefix += f" (event_id={event_id})"
        super().__init__(f"{prefix}: {reason}")


class StoreConflict(CallpulseError):
    """Another writer changed a customer or ticket state between our read and our write."""


class ShuttingDown(CallpulseError):
    """The worker is stopping while a batch cannot be applied; it stays unacked and is read again later."""
