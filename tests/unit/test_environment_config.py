"""The environment settings: defaults, values, and bad values named in the error."""

from __future__ import annotations

import pytest

from ona_taskrun import config
from ona_taskrun.config import ConfigError

BASE = {"ONA_API_TOKEN": "t0ken", "POD_NAME": "operator-0"}


def test_defaults_follow_onas_advice() -> None:
    cfg = config.load([], BASE)
    assert (cfg.environment_poll, cfg.environment_timeout) == (5.0, 600.0)
    # Every 5 minutes, as Ona advises: a sixth of the shortest idle timeout.
    assert cfg.environment_keepalive == 300.0


def test_values_are_read() -> None:
    cfg = config.load(
        [],
        {
            **BASE,
            "ENVIRONMENT_POLL_SECONDS": "0.5",
            "ENVIRONMENT_START_TIMEOUT": "120",
            "ENVIRONMENT_KEEPALIVE_SECONDS": "60",
        },
    )
    assert (cfg.environment_poll, cfg.environment_timeout, cfg.environment_keepalive) == (
        0.5,
        120.0,
        60.0,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENVIRONMENT_POLL_SECONDS", "0"),
        ("ENVIRONMENT_START_TIMEOUT", "soon"),
        ("ENVIRONMENT_KEEPALIVE_SECONDS", "0.1"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        config.load([], {**BASE, name: value})
