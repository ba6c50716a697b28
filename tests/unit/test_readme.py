from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

import adapters.metrics  # noqa: F401 - registers the metrics

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_readme_lists_every_metric_and_no_other() -> None:
    """The metrics table (docs/operations.md) names exactly the metrics the code defines."""
    listed = set(re.findall(r"^\| `(syncd_[a-z_]+)` \|", OPERATIONS.read_text(), re.M))
    defined = set()
    for collector in list(REGISTRY._collector_to_names):
        for metric in collector.describe() if hasattr(collector, "describe") else []:
            if not metric.name.startswith("syncd_"):
                continue
            suffix = {"counter": "_total", "info": "_info"}.get(metric.type, "")
            defined.add(metric.name + suffix)
    assert listed == defined
