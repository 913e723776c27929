"""How long to wait before trying again: the one back-off formula of the project.

Every retry loop (the watches, the execution tracker, the breaker, per-TaskRun calls,
spec.retries, the Ona client's own retries) waits `exponential(...)`: a base doubled once
per failure, never more than a cap, optionally spread by a random draw so that many
waiters do not come back at the same moment. A decision that waits out an outage of one
call waits `after(...)`: the server's Retry-After when it gave one.

Pure: the random draw is an argument, so a caller (or a test) decides where it comes from.
"""

from __future__ import annotations

# Beyond this many doublings every cap in use has long been reached (and 2.0 ** 1024
# does not fit a float).
_MOST_DOUBLINGS = 64
# A Retry-After shorter than this is not taken literally: the call would come straight back.
_SHORTEST_RETRY_AFTER = 0.5


def exponential(base: float, doublings: int, cap: float, *, jitter: float | None = None) -> float:
    """`base` doubled `doublings` times (none when negative), at most `cap`.

    `jitter`, a draw from [0, 1), spreads the wait over its upper half (from half of it up
    to all of it): waiters that failed together come back apart, and never much sooner
    than the back-off asks."""
    wait = min(base * 2.0 ** min(max(doublings, 0), _MOST_DOUBLINGS), cap)
    return wait if jitter is None else spread(wait, jitter)


def spread(wait: float, draw: float) -> float:
    """`wait` spread over its upper half by `draw`, from [0, 1)."""
    return wait * (0.5 + draw / 2)


def after(retry_after: float | None, default: float) -> float:
    """The wait before a refused or unanswered call is tried again: the server's
    Retry-After when it gave one, else `default`."""
    if retry_after:
        return max(retry_after, _SHORTEST_RETRY_AFTER)
    return default
