"""Reading an operator's /metrics as Prometheus does, and the metric names that
monitoring files (alert rules, dashboards) refer to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

# The samples each metric type exposes, beside the family's own name.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
    "gauge": ("",),
}
_NAME = re.compile(r"\b(ona_taskrun_[a-z0-9_]+)\b")


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample's value, and every name the endpoint declares (a
    labelled counter declares its name before its first sample)."""

    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]
    names: frozenset[str]

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 if there is none yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        for sample in family.samples:
            names.add(sample.name)
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return Scrape(samples, frozenset(names))


def scrape(port: int, host: str = "127.0.0.1") -> Scrape:
    response = httpx.get(f"http://{host}:{port}/metrics", timeout=5.0)
    response.raise_for_status()
    return parse(response.text)


def try_scrape(port: int) -> Scrape | None:
    try:
        return scrape(port)
    except httpx.HTTPError:
        return None


def referenced_names(texts: Iterable[str]) -> set[str]:
    """Every `ona_taskrun_...` name a PromQL expression in these texts uses."""
    return {m.group(1) for text in texts for m in _NAME.finditer(text)}
