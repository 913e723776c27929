"""The previous versions the upgrade tests start from, taken from git history.

No release was ever tagged, so each is pinned by commit:

- `RELEASE_0_1_0` (070ebb7) is 0.1.0: the last commit before the round whose changes
  CHANGELOG.md lists under "Unreleased" (its first commit is f558b68). CHANGELOG.md itself
  was written later in that round (b6cd065), when the CRDs already held the changes it
  lists as upgrade notes (spec.timeout at most 720h, status.unservedMethods), so the
  CRDs "as of the commit that introduced the CHANGELOG" would be today's; the chart and
  CRDs at 070ebb7 are what a 0.1.0 user has installed.
- `BEFORE_RESTRUCTURE` (9c4abb2) is the operator as the round before this one left it:
  the newest commit before the package moved into rules/clients/controller/observability.

Both need the same packages as today's operator (kopf, httpx, pydantic, aiohttp,
certifi, pyyaml, prometheus-client, croniter, tzdata: then all in `dependencies`, now
split between `dependencies` and the extra `operator`, with the same bounds), so their
code runs from the current virtualenv with PYTHONPATH pointing at its `operator/`
(PYTHONPATH comes before the editable install's path; the tests check which package was
imported).

Files are read with `git archive` into a temporary folder: the repository's work tree
and its list of worktrees stay untouched, and nothing is left behind if a test dies.
A clone without that history (a shallow one) fails here with a message saying so.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASE_0_1_0 = "070ebb7"
BEFORE_RESTRUCTURE = "9c4abb2"


def extract(commit: str, paths: list[str], dest: Path) -> Path:
    """Write `paths` (files or folders) as they were at `commit` under `dest`."""
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, *paths],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"git archive {commit} {' '.join(paths)} failed: "
            f"{result.stderr.decode(errors='replace').strip()} "
            "(the upgrade tests need the repository's history: a full clone, not a shallow one)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        archive.extractall(dest, filter="data")
    return dest
