"""The soak's arithmetic: the mix it deals, the growth it fits, the sites it blames."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from tools.soak import MIX, SoakSettings, growth
from tools.soak.figures import site_growth, slope, warmup_length
from tools.soak.run import kind_of, team_run


def test_the_mix_is_dealt_in_its_shares_and_a_third_uses_the_second_connection() -> None:
    kinds = Counter(kind_of(i) for i in range(1000))
    assert kinds == {kind: share * 10 for kind, share in MIX.items()}
    for kind in ("quick", "ttl", "failing", "retry", "midrun"):
        mine = [i for i in range(300) if kind_of(i) == kind]
        assert 0 < sum(team_run(i) for i in mine) < len(mine), kind
    assert all(team_run(i) for i in range(300) if kind_of(i) in ("project", "ref"))


def test_slope_is_least_squares() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 0), (1, 1), (2, 0), (3, 1)]) == pytest.approx(0.2)
    assert slope([(5, 1), (5, 2)]) is None


def _sample(runs: int, heap: int, rss: float, incarnation: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "runs": runs,
        "heap_bytes": heap,
        "gc_objects": runs // 10,
        "rss_mib": rss,
        "incarnation": incarnation,
        **extra,
    }


def test_growth_is_fitted_per_operator_after_its_warm_up() -> None:
    settings = SoakSettings(taskruns=4000, sample_every=500, warmup=1000)
    samples = [
        _sample(0, 1_000, 80.0),
        _sample(500, 9_000_000, 95.0),  # warm-up: caches filling
        _sample(1000, 10_000_000, 100.0),
        _sample(1500, 10_050_000, 100.5),
        _sample(2000, 10_100_000, 101.0),
        # Restarted at 2000: the new operator's warm-up runs to 3000.
        _sample(2500, 7_000_000, 90.0, incarnation=1),
        _sample(3000, 8_000_000, 95.0, incarnation=1),
        _sample(3500, 8_000_000, 95.0, incarnation=1),
        _sample(4000, 8_000_000, 95.5, incarnation=1),
        _sample(4000, 8_000_100, 95.5, incarnation=1, final=True),
    ]
    first, second = growth(samples, settings, restarted_at=2000)
    assert first["fit_from_run"] == 1000
    assert first["heap_bytes_per_run"] == pytest.approx(100.0)
    assert first["rss_mib_growth"] == pytest.approx(1.0)
    assert second["fit_from_run"] == 3000
    assert second["fit_to_run"] == 4000  # the final sample is left out
    assert second["heap_bytes_per_run"] == pytest.approx(0.0)
    assert second["rss_mib_growth"] == pytest.approx(0.5)


def test_too_few_samples_past_warm_up_give_no_fit() -> None:
    settings = SoakSettings(taskruns=1000, sample_every=500, restart=False)
    assert warmup_length(settings) == 500
    (only,) = growth([_sample(0, 1, 1.0), _sample(500, 2, 2.0)], settings, None)
    assert "heap_bytes_per_run" not in only
    assert only["warm_samples"] == 1


def test_the_sites_that_grew_most_come_first() -> None:
    before = {"a.py:1": 100, "b.py:2": 500, "c.py:3": 50}
    after = {"a.py:1": 1100, "b.py:2": 400, "d.py:4": 30}
    assert site_growth(before, after) == [("a.py:1", 1000), ("d.py:4", 30)]
