"""Start claims the operator can tell from forgeries.

The start claim (`automation.ona.com/start-requested-at`, `start-attempts`,
`start-attempt`) lives in a TaskRun's annotations so that it goes out with the finalizer
in one conditional write. Annotations are writable by anyone who may edit the TaskRun,
so a claim is authority only when it carries the operator's signature: an HMAC, keyed by
a secret only the operator reads, over the TaskRun's uid and the claim's fields. A claim
without a valid signature (written by a person, copied from another TaskRun, or left by
a version that did not sign) is ignored, and the claim mirrored in the status, which
authors cannot write, is used instead.

Nothing here does I/O; the key is loaded at start (`reconciler.load_claim_key`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SIGNATURE_ANNOTATION = "automation.ona.com/start-claim-signature"
# The Secret in the operator's namespace that holds the key, and its data key.
KEY_SECRET = "ona-taskrun-claim-key"
KEY_FIELD = "key"
KEY_BYTES = 32
_VERSION = "v1"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


class ClaimSigner:
    """Signs and verifies start claims with one key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a claim key needs at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "ClaimSigner(***)"

    def sign(self, uid: str, requested_at: str, attempts: int, attempt: int) -> str:
        message = "\0".join((_VERSION, uid, requested_at, str(attempts), str(attempt)))
        digest = hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).digest()
        return f"{_VERSION}:{base64.urlsafe_b64encode(digest).decode('ascii').rstrip('=')}"

    def verify(
        self, uid: str, requested_at: str, attempts: int, attempt: int, signature: str
    ) -> bool:
        if not uid or not signature:
            return False
        expected = self.sign(uid, requested_at, attempts, attempt)
        return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
