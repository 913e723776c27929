"""Exactly-once creation of something remote that the Ona API creates without an
idempotency key: a task execution (StartTask) or an environment
(CreateEnvironmentFromProject), and whatever comes next.

The protocol is claim → call → record. The caller writes its claim (the time it asked)
with a resourceVersion precondition before the call, and records the created id from the
answer. When the answer never came (a timeout, a dropped connection, a crash between
claim and record) the outcome is unknown, and this module says how it is resolved:

1. wait until the settle has passed, counted from the end of the claim's second (the
   claim is written in whole seconds), so a request still in flight has landed;
2. look for what the call may have made (the caller's find action) and keep only the
   candidates that may be this run's (the caller's filter);
3. none: the API confirms nothing was made, so it is created again (the claim cleared);
   one: it is adopted; more than one: nothing more is created, and the run waits for a
   person, with a message naming every candidate.

A person answers with an annotation naming the one to adopt. The name is a request: it
is honoured only for a candidate the run's own look found (or, where the caller verifies
by reading the named one, that the read shows to be this run's), after the same settle.
A refused name is never repeated in status or Events (it may be someone else's); a digest
of it marks the refusal, so it is not looked at again until another name is written.

Nothing here does I/O. The caller turns the returned `Outcome` into its own status,
action and Event; the words it passes (`Words`) make every message.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from . import backoff

# Longer than any Ona id: an annotation is cut to it before any use.
MAX_NAME = 128
_REFUSED_MARK = "refused adoption "
# The requeue while an outage keeps the look (or the read of a named one) from answering,
# and while a look is refused, unless the server says when to come back.
_OUTAGE_RETRY = 5.0
_REFUSED_RETRY = 30.0


class Candidate(Protocol):
    @property
    def id(self) -> str: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True)
class Words:
    """What the thing being created is called in the messages a user reads."""

    thing: str  # "execution"
    act: str  # "start": "looking for the execution of a start whose outcome is unknown"
    annotation: str  # the annotation a person names the one to adopt with
    waiting: str  # while the settle lasts
    recreating: str  # when the look confirms nothing was made
    # "cannot tell which execution {made} (...); nothing more is {again}. Annotate the
    # TaskRun with <annotation>=<execution id> {choose}"
    made: str
    again: str
    choose: str
    # "only {eligible} can be adopted (...); name another{otherwise}"
    eligible: str
    # The reasons of the Events: a stall for a person, an adoption, a new creation, and a
    # refused hand adoption.
    unknown_reason: str
    adopted_reason: str
    recreating_reason: str
    refused_reason: str
    otherwise: str = ""


@dataclass(frozen=True)
class Wait:
    """A reason the caller's filter cannot conclude yet, and when to look again."""

    message: str
    requeue: float


@dataclass(frozen=True)
class Found(Generic[C]):
    """What the run's own look found, as the caller's filter judged it."""

    # The candidates that may be this run's.
    eligible: tuple[C, ...]
    # Why the found candidates cannot be told apart at all (the stall says it, and no
    # hand adoption is honoured): "" when they can.
    cannot_tell: str = ""
    # The filter needs more time before it can judge (checked before anything else).
    not_yet: Wait | None = None
    # Other creations of the same thing are unanswered: a candidate may be theirs, so
    # nothing is adopted on its own until they are (a hand adoption still is).
    in_flight: Wait | None = None


@dataclass(frozen=True)
class NamedRead(Generic[C]):
    """A hand adoption verified by reading the named one rather than by the look."""

    found: C | None  # the named one as read in this pass; None: not read, or unreadable
    tried: bool  # the read was tried in this pass
    ours: bool  # `found` may be this run's


@dataclass(frozen=True)
class Creation(Generic[C]):
    """A creation whose outcome is unknown: claimed, and no id recorded."""

    words: Words
    claimed_at: datetime
    settle: timedelta
    # The Stalled message while the run waits for a person; None when it does not.
    stalled: str | None
    # The adopt annotation as written (a request); "" when absent.
    annotation: str
    # None until the look was made in this pass.
    found: Found[C] | None
    # Names that can never be adopted (an earlier attempt's, say).
    spent: frozenset[str] = frozenset()
    # How a named one is verified: None, against the look's candidates.
    named: NamedRead[C] | None = None
    # An outage lasts (the look or read is tried again after a back-off).
    outage: bool = False
    retry_after: float | None = None
    # The message of a look the API refused ("" when it was not): said, and tried later.
    look_refused: str = ""


class Step(enum.Enum):
    WAIT = "wait"  # nothing to do until `requeue`
    AWAIT_PERSON = "await-person"  # stalled: only the generation is noted
    READ_NAMED = "read-named"  # read the named one (`name`)
    LOOK = "look"  # the caller's find action
    ADOPT = "adopt"  # record `chosen`
    CREATE_AGAIN = "create-again"  # clear the claim; the next pass claims and calls anew
    STALL = "stall"  # a person must choose: Stalled=True with `message`


class Trouble(enum.Enum):
    """Which failure the status shows with this outcome (RemoteReachable)."""

    NONE = "none"
    OUTAGE = "outage"  # the lasting outage, if any
    REFUSED = "refused"  # the refused look


@dataclass(frozen=True)
class Notice:
    """An Event to post."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome(Generic[C]):
    step: Step
    message: str = ""
    requeue: float | None = None
    chosen: C | None = None
    name: str = ""  # READ_NAMED: the name to read
    event: Notice | None = None
    trouble: Trouble = Trouble.NONE


def settle_at(claimed_at: datetime, settle: timedelta) -> datetime:
    """When a look may first be made: `settle` after the end of the claim's second.

    The claim is written in whole seconds, up to a second before the call was made, so
    counting from the end of that second never makes the wait shorter than set (it must
    outlast the request it waits for)."""
    return claimed_at.replace(microsecond=0) + timedelta(seconds=1) + settle


def fingerprint(name: str) -> str:
    # A refused name is not repeated in status or Events (it may be another principal's);
    # its digest lets a later pass tell a name it has refused already.
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]


def _refused_before(stalled: str | None, name: str) -> bool:
    return stalled is not None and f"({_REFUSED_MARK}{fingerprint(name)})" in stalled


def requested_name(creation: Creation[C]) -> str:
    """The name a person asked to adopt, if it is still to be considered."""
    name = creation.annotation.strip()[:MAX_NAME]
    if name in creation.spent:
        return ""  # named for something already settled, which keeps what it has
    if name and _refused_before(creation.stalled, name):
        return ""  # refused before; the person was told, and may name another
    return name


def resolve(creation: Creation[C], now: datetime) -> Outcome[C]:
    """What to do next about a creation whose outcome is unknown."""
    words = creation.words
    name = requested_name(creation)
    due = settle_at(creation.claimed_at, creation.settle)
    if now < due:
        return Outcome(
            Step.WAIT,
            words.waiting,
            requeue=(due - now).total_seconds(),
            trouble=Trouble.OUTAGE,
        )
    if creation.stalled is not None and not name:
        return Outcome(Step.AWAIT_PERSON)
    retry = backoff.after(creation.retry_after, _OUTAGE_RETRY) if creation.outage else None
    if name and creation.named is not None:
        return _verify_read(words, creation.named, name, retry)
    found = creation.found
    if found is None:
        if creation.look_refused:
            msg = f"cannot look for the {words.thing} of an unknown {words.act}: "
            return Outcome(
                Step.WAIT,
                msg + creation.look_refused,
                requeue=backoff.after(creation.retry_after, _REFUSED_RETRY),
                trouble=Trouble.REFUSED,
            )
        return Outcome(
            Step.LOOK,
            f"looking for the {words.thing} of a {words.act} whose outcome is unknown",
            requeue=retry,
            trouble=Trouble.OUTAGE,
        )
    if found.not_yet is not None:
        return _waiting(found.not_yet)
    if name:
        eligible = () if found.cannot_tell else found.eligible
        return _by_hand(words, name, next((c for c in eligible if c.id == name), None))
    candidates = found.eligible
    if candidates and found.in_flight is not None:
        return _waiting(found.in_flight)
    if len(candidates) == 1 and not found.cannot_tell:
        return _adopted(
            words,
            candidates[0],
            f"after a {words.act} whose outcome was unknown",
        )
    if not candidates:
        return Outcome(
            Step.CREATE_AGAIN,
            words.recreating,
            event=Notice("Normal", words.recreating_reason, words.recreating),
        )
    return _stall(words, candidates, found.cannot_tell)


def _waiting(wait: Wait) -> Outcome[C]:
    return Outcome(Step.WAIT, wait.message, requeue=wait.requeue, trouble=Trouble.OUTAGE)


def _verify_read(words: Words, named: NamedRead[C], name: str, retry: float | None) -> Outcome[C]:
    seen = named.found if named.found is not None and named.found.id == name else None
    if seen is None and not named.tried:
        return Outcome(
            Step.READ_NAMED,
            f"checking the {words.thing} named by {words.annotation}",
            requeue=retry,
            name=name,
            trouble=Trouble.OUTAGE,
        )
    if seen is None and retry is not None:
        return Outcome(Step.WAIT, f"cannot check the named {words.thing} yet", requeue=retry)
    return _by_hand(words, name, seen if seen is not None and named.ours else None)


def _adopted(words: Words, chosen: C, how: str) -> Outcome[C]:
    msg = f"adopted {words.thing} {chosen.id} {how}"
    return Outcome(
        Step.ADOPT, msg, chosen=chosen, event=Notice("Normal", words.adopted_reason, msg)
    )


def _by_hand(words: Words, name: str, chosen: C | None) -> Outcome[C]:
    """Adopt the one a person named if the run's own look (or read) found it this run's;
    else refuse, without repeating the name."""
    if chosen is not None:
        return _adopted(words, chosen, "as annotated")
    msg = (
        f"the {words.thing} named by {words.annotation} was refused: only {words.eligible} "
        f"can be adopted ({_REFUSED_MARK}{fingerprint(name)}); name another{words.otherwise}"
    )
    return Outcome(Step.STALL, msg, event=Notice("Warning", words.refused_reason, msg))


def _stall(words: Words, candidates: Sequence[C], why: str) -> Outcome[C]:
    ids = ", ".join(sorted(c.id for c in candidates))
    msg = (
        f"cannot tell which {words.thing} {words.made} ({ids}{'; ' + why if why else ''}); "
        f"nothing more is {words.again}. Annotate the TaskRun with "
        f"{words.annotation}=<{words.thing} id> {words.choose}"
    )
    return Outcome(Step.STALL, msg, event=Notice("Warning", words.unknown_reason, msg))
