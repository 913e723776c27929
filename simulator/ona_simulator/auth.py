"""Bearer tokens and the subject each one acts as.

Tokens are secrets: they are keys of a private map and never appear in any answer, call
record or log line. Everything outward speaks of the subject id instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ona_simulator.wire import ConnectError, new_id


@dataclass(frozen=True)
class Subject:
    id: str
    read_only: bool

    def to_json(self) -> dict[str, object]:
        return {"subjectId": self.id, "readOnly": self.read_only}


class TokenRegistry:
    def __init__(self, tokens: Iterable[str], readonly_tokens: Iterable[str]) -> None:
        self._initial: dict[str, Subject] = {}
        for token in tokens:
            self._initial[token] = Subject(id=new_id(), read_only=False)
        for token in readonly_tokens:
            self._initial[token] = Subject(id=new_id(), read_only=True)
        self._subjects: dict[str, Subject] = dict(self._initial)

    def reset(self) -> None:
        """Back to the tokens given at startup, with the same subjects as before."""
        self._subjects = dict(self._initial)

    def add(self, token: str, *, read_only: bool, subject_id: str | None = None) -> Subject:
        if not token:
            raise ConnectError("invalid_argument", "token: must not be empty")
        subject = Subject(id=subject_id or new_id(), read_only=read_only)
        self._subjects[token] = subject
        return subject

    def revoke(self, token: str) -> bool:
        return self._subjects.pop(token, None) is not None

    def lookup(self, token: str) -> Subject | None:
        return self._subjects.get(token)

    def authenticate(self, headers: Mapping[str, str]) -> Subject:
        header = headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ConnectError("unauthenticated", "missing Authorization header")
        if scheme.lower() != "bearer" or not token.strip():
            raise ConnectError(
                "unauthenticated", "Authorization header must be 'Bearer <personal access token>'"
            )
        subject = self._subjects.get(token.strip())
        if subject is None:
            raise ConnectError("unauthenticated", "the access token is invalid or has expired")
        return subject

    def subjects(self) -> list[Subject]:
        return list(self._subjects.values())
