"""The Kubernetes versions the compatibility tier runs on, besides the one every other
test uses (scripts/build-control-plane's default, v1.37.2).

v1.30 is the oldest the CRDs work on as intended: the TaskRun CRD's create-only rule
(`optionalOldSelf: true`, validation ratcheting, KEP-4008) needs the
CRDValidationRatcheting feature, alpha and off by default in 1.28 and 1.29, beta and on
from 1.30, GA in 1.33. A 1.29 API server drops `optionalOldSelf` from the CRD (its
strategy removes fields of a disabled feature), and the rule, which calls
`oldSelf.hasValue()`, no longer compiles: the CRD is refused. Everything else the CRDs
use is older: CEL rules and transition rules (`oldSelf`) are on by default since 1.25
and GA in 1.29; `duration()` and `matches()` are in the base CEL environment of 1.25.

v1.33 is one in the middle (and where ratcheting is GA).

Each pairs with the etcd its release was tested with upstream (3.5.x before 1.34);
scripts/build-control-plane picks it from the version and caches the build.
"""

from __future__ import annotations

import os

OLDEST = "v1.30.14"
MIDDLE = "v1.33.13"
# ONA_COMPAT_VERSIONS (comma-separated) runs the tier on other versions instead, e.g.
# v1.29.15 to see the CRDs refused there.
COMPAT_VERSIONS = tuple(
    v.strip()
    for v in os.environ.get("ONA_COMPAT_VERSIONS", f"{OLDEST},{MIDDLE}").split(",")
    if v.strip()
)
