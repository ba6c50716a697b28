"""One composition root (daemon/bootstrap.py): the daemon, the tests' pipeline and
the benchmark get their consumer loop, relays and projections from ``build``, so
none of them can run a wiring of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from daemon import bootstrap
from daemon.runtime.services import Services
from daemon.runtime.settings import Settings
from projections import registry
from projections.config import SyncConfig
from projections.handshake import HandshakeProjection
from projections.sync import SyncProjection

ROOT = Path(__file__).resolve().parents[2]
WIRED = ("ConsumerLoop", "OutboxRelay", "SignalPublisher")
CALLERS = ("daemon", "ops", "tests/support")


def _constructions(path: Path) -> set[str]:
    called = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    return called & set(WIRED)


def test_only_bootstrap_constructs_the_pipeline() -> None:
    constructing = {str(path.relative_to(ROOT)) for folder in CALLERS
                    for path in (ROOT / folder).rglob("*.py") if _constructions(path)}
    assert constructing == {"daemon/bootstrap.py"}


def _build(overrides: bootstrap.Overrides = bootstrap.NO_OVERRIDES) -> bootstrap.Pipeline:
    settings = Settings(kafka_bootstrap="localhost:9092", topic_prefix="t", group_id="g",
                        relay_poll_interval=0.3, relay_resend_after=7, batch_max=50)
    return bootstrap.build(settings, services=Services(dsn="postgresql:///x",
                                                       bootstrap="localhost:9092"),
                           pool=object(), config=SyncConfig,  # type: ignore[arg-type]
                           overrides=overrides)


def test_build_wires_the_registry_and_the_settings() -> None:
    pipeline = _build()
    assert [type(p) for p in pipeline.projections] == [
        type(p) for p in registry.live_projections(SyncConfig)]
    assert pipeline.consumer.topic == "t.events" and pipeline.consumer.group_id == "g"
    assert pipeline.consumer.batch_max == 50
    assert set(pipeline.relays) == {"desk", "crm"}
    assert all(r.poll_interval == 0.3 and r.resend_after == 7 for r in pipeline.relays.values())
    assert set(pipeline.roots()) == {"projector", "resume-drain", "relay-desk", "relay-crm",
                                     "signal-publisher"}
    assert pipeline.publisher is not None and pipeline.publisher.topic == "t.signals"
    assert pipeline.projection(HandshakeProjection) in pipeline.projections


def test_overrides_pass_hooks_and_projections() -> None:
    sync = SyncProjection(SyncConfig)
    sent: list[tuple[str, list[int]]] = []
    pipeline = _build(bootstrap.Overrides(projections=[sync],
                                          on_sent=lambda s, n: sent.append((s, n))))
    assert pipeline.projections == [sync] and pipeline.sync is sync
    hook = pipeline.relays["crm"].on_sent
    assert hook is not None
    hook([7, 8, 9])
    assert sent == [("crm", [7, 8, 9])]


def test_a_pipeline_without_the_sync_is_refused() -> None:
    with pytest.raises(ValueError, match="sync projection"):
        _build(bootstrap.Overrides(projections=[HandshakeProjection()]))
