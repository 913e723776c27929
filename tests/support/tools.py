"""helm and promtool for the deployment tests: from $HELM / $PROMTOOL when set, otherwise
from scripts/build-tools, which builds them once per version and caches them (CI runs
it before the tests; a developer's first run here waits for the build)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tools"


@functools.cache
def _built() -> Path:
    # The build's progress goes to our stderr: a cold build takes minutes.
    result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(lines[-1])


def tool(name: str) -> Path:
    """The executable `name` (helm or promtool)."""
    override = os.environ.get(name.upper())
    path = Path(override) if override else _built() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"{path} is not an executable {name}")
    return path


def run(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool with its state kept out of $HOME (helm writes a cache and a config)."""
    env = {**os.environ}
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "ona-taskrun-tools"
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env.setdefault(var, str(scratch / var.lower()))
    return subprocess.run(
        [str(tool(name)), *args], capture_output=True, text=True, check=False, cwd=cwd, env=env
    )
