"""OWN-02 under fault injection: the short chaos run of the default suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.chaos.harness import run_chaos

# One worker runs the harness-sized runs one after the other (dev.py runs two
# pytest workers): side by side on two cores their timings would be each other's.
pytestmark = pytest.mark.xdist_group("heavy")


async def test_short_chaos_run_loses_doubles_and_diverges_nothing(tmp_path: Path) -> None:
    """SIGKILLs, a zombie consumer, broker and PostgreSQL restarts, a relay killed
    mid-batch and a switch to one-way CRM -> desk and back (with a SIGKILL in one-way
    mode): every change applied once, both stores converged to the model."""
    figures = await run_chaos(changes=1500, kills=8, seed=11, root=tmp_path,
                              echo=lambda _line: None)
    assert figures.kills >= 4 and figures.zombies == 1 and figures.broker_restarts == 1
    assert figures.postgres_restarts == 1 and figures.relay_kills == 1
    assert figures.mode_switches == 2  # to one-way and back
    assert figures.events_expected > 1500
    assert not figures.aborted, figures.problems
    assert (figures.lost, figures.duplicated, figures.diverged) == (0, 0, 0), figures.problems
    # Every projection is what its event log says: a dry-run rebuild changes nothing.
    assert figures.rebuild_changes == 0, "\n".join(figures.problems)
    assert figures.ok, figures.problems


async def test_two_replicas_share_the_work_and_survive_one_killed(tmp_path: Path) -> None:
    """OWN-05: two daemons in one group, one killed midway: every change applied once."""
    from ops.chaos.harness import run_two_replicas

    figures = await run_two_replicas(changes=3000, root=tmp_path, echo=lambda _line: None)
    assert figures.kills == 1 and figures.events_expected >= 3000
    assert not figures.aborted, figures.problems
    assert (figures.lost, figures.duplicated, figures.diverged) == (0, 0, 0), figures.problems
    assert figures.rebuild_changes == 0, "\n".join(figures.problems)
    assert figures.ok, figures.problems
