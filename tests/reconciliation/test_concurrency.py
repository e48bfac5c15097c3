"""Two reviewers decide the same item at the same moment: exactly one wins, the other gets a
DecisionConflict naming who decided. Needs PostgreSQL's row locks (select_for_update)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connections

from reconciliation import routes, services
from reconciliation.models import Decision, Match
from tests.reconciliation.conftest import review_item

pytestmark = [pytest.mark.postgres]


def race(match_id: int, deciders: list[tuple[Any, str]]) -> list[Any]:
    """Run one decide() per (user, action) in its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(deciders))
    outcomes: list[Any] = [None] * len(deciders)

    def run(index: int, user: Any, action: str) -> None:
        try:
            barrier.wait()
            outcomes[index] = services.decide(match_id, user, action, candidate=0)
        except Exception as exc:  # collected and asserted on by the test
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, user, action)) for i, (user, action) in enumerate(deciders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.fixture
def slow_poster(monkeypatch):
    """Hold the winner's transaction open a moment so the other decision really waits on the lock."""
    original = routes.Route.on_post

    def on_post(self: routes.Route, match: Match) -> None:
        time.sleep(0.3)
        original(self, match)

    monkeypatch.setattr(routes.Route, "on_post", on_post)


@pytest.mark.parametrize("second_action", ["approve", "reject"])
def test_two_reviewers_deciding_one_item_exactly_one_wins(transactional_db, mirror_a, reviewer_a, owner_a, slow_poster, second_action):
    match, _, _ = review_item(mirror_a, confidence=72)
    outcomes = race(match.pk, [(reviewer_a, "approve"), (owner_a, second_action)])

    winners = [o for o in outcomes if isinstance(o, Match)]
    losers = [o for o in outcomes if isinstance(o, services.DecisionConflict)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    winner = winners[0]
    assert winner.decided_by.email in str(losers[0]) and "already" in str(losers[0])
    match.refresh_from_db()
    assert match.status == winner.status and match.version == 2
    assert Decision.objects.filter(match=match).count() == 1
    assert match.links.count() == (1 if match.status == "approved" else 0)
