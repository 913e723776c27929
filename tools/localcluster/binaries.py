"""Where the control-plane binaries (etcd, kube-apiserver, kubectl) come from.

`KUBEBUILDER_ASSETS` wins when set (the envtest convention: one folder holding all three);
otherwise `scripts/build-control-plane` provides them, building once per version and caching.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-control-plane"
ASSETS_ENV = "KUBEBUILDER_ASSETS"


class BinariesError(RuntimeError):
    """The binaries could not be found or built."""


@dataclass(frozen=True)
class Binaries:
    folder: Path

    @property
    def etcd(self) -> Path:
        return self.folder / "etcd"

    @property
    def kube_apiserver(self) -> Path:
        return self.folder / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.folder / "kubectl"

    def missing(self) -> list[str]:
        return [
            path.name
            for path in (self.etcd, self.kube_apiserver, self.kubectl)
            if not (path.is_file() and os.access(path, os.X_OK))
        ]


def resolve_binaries() -> Binaries:
    """Find the binaries, building them with scripts/build-control-plane when needed."""
    assets = os.environ.get(ASSETS_ENV)
    if assets:
        binaries = Binaries(Path(assets).expanduser().resolve())
        source = f"{ASSETS_ENV}={assets}"
    else:
        # The build prints its progress on stderr (left on ours: a cold build takes many
        # minutes and should not look hung) and the folder as the last stdout line.
        result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise BinariesError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
        binaries = Binaries(Path(lines[-1]))
        source = str(BUILD_SCRIPT)
    missing = binaries.missing()
    if missing:
        raise BinariesError(
            f"{binaries.folder} (from {source}) lacks executable {', '.join(missing)}"
        )
    return binaries
