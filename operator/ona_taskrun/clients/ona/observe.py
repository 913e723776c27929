"""What an OnaClient tells about its calls, to whoever wants to count them.

The client knows nothing of metrics: the operator passes an observer that records what it
is told (`metrics.OnaRequests`); the kubectl plugin and tests pass none.
"""

from __future__ import annotations

from typing import Protocol


class OnaObserver(Protocol):
    def on_request(self, method: str, code: str, seconds: float) -> None:
        """One attempt of a unary request ended after `seconds`: `code` is `ok`, the
        Connect code of its error, or `canceled` when the caller stopped waiting. Called on
        the caller's task, so it must be quick and must not raise."""


class _NoObserver:
    def on_request(self, method: str, code: str, seconds: float) -> None:
        return None


NO_OBSERVER = _NoObserver()
