"""What an OnaClient tells about its calls, to whoever wants to count them.

The client knows nothing of metrics: the operator passes an observer that records what it
is told (`metrics.OnaRequests`); the kubectl plugin and tests pass none. As a
`ThrottleObserver` it is also told each 429 and each wait it caused, under the name of the
client's throttle (the operator's connection).
"""

from __future__ import annotations

from typing import Protocol

from ..throttle import ThrottleObserver


class OnaObserver(ThrottleObserver, Protocol):
    def on_request(self, method: str, code: str, seconds: float) -> None:
        """One attempt of a unary request ended after `seconds`: `code` is `ok`, the
        Connect code of its error, or `canceled` when the caller stopped waiting. Called on
        the caller's task, so it must be quick and must not raise."""


class _NoObserver:
    def on_request(self, method: str, code: str, seconds: float) -> None:
        return None

    def on_throttled(self, name: str, hold: float) -> None:
        return None

    def on_waited(self, name: str, seconds: float) -> None:
        return None


NO_OBSERVER = _NoObserver()
