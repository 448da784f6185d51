"""Server heartbeats (ddp-common/heartbeat.js), as a clock-driven state machine.

Every ``interval`` seconds: if nothing arrived since the last tick and no ping is
outstanding, ping; if a ping is outstanding for ``timeout`` seconds, the peer is gone.
Any received message counts as the pong.
"""
from __future__ import annotations

import enum

__all__ = ["Heartbeat", "Beat"]


class Beat(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"
    TIMEOUT = "timeout"


class Heartbeat:
    def __init__(self, interval: float = 15.0, timeout: float = 15.0, *, now: float = 0.0) -> None:
        self.interval = interval
        self.timeout = timeout
        self._received_since_tick = False
        self._ping_sent_at: float | None = None
        self._last_tick = now

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def message_received(self) -> None:
        self._received_since_tick = True
        self._ping_sent_at = None

    def next_deadline(self) -> float:
        """The clock time at which ``tick`` has something to decide."""
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.timeout
        return self._last_tick + self.interval

    def tick(self, now: float) -> Beat:
        if not self.enabled:
            return Beat.NOTHING
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at >= self.timeout:
                return Beat.TIMEOUT
            return Beat.NOTHING
        if now - self._last_tick < self.interval:
            return Beat.NOTHING
        self._last_tick = now
        if self._received_since_tick:
            self._received_since_tick = False
            return Beat.NOTHING
        self._ping_sent_at = now
        return Beat.PING
