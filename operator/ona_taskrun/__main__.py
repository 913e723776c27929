"""`taskrun-operator`: load and check the configuration, set up logging, run kopf."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf

from . import config as config_module
from .app import App, build_registry
from .controller.checkpoints import NO_CHECKPOINTS, Checkpoints
from .observability import logs


def main(argv: Sequence[str] | None = None, checkpoints: Checkpoints = NO_CHECKPOINTS) -> int:
    try:
        cfg = config_module.load(argv)
    except config_module.ConfigError as exc:
        print(f"taskrun-operator: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(cfg.log_level, cfg.log_format, cfg.token.reveal() if cfg.token else "")
    app = App(cfg, checkpoints)
    kopf.run(
        registry=build_registry(app),
        clusterwide=cfg.all_namespaces,
        namespaces=list(cfg.namespaces),
        standalone=True,
        # An explicit identity spares kopf a passwd lookup that fails under arbitrary UIDs.
        identity=cfg.identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=cfg.liveness_endpoint,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
