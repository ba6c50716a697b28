"""A Zoho Desk customer happiness list item read as its ticket's rating, in the
embedded desk's values (``projections.ticket_stats.RATINGS``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from adapters.zoho.desk_fields import happiness_rating
from projections.ticket_stats import RATINGS

WHEN = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("given", "rating"), [
    ("GOOD", "good"), ("good", "good"), ("OK", "okay"), ("ok", "okay"), ("Okay", "okay"),
    ("BAD", "bad"), ("bad", "bad")])
def test_each_rating_is_one_of_the_embedded_desks(given: str, rating: str) -> None:
    item = {"id": "1", "rating": given, "ratedTime": "2026-12-02T10:00:00.000Z",
            "ticketId": "42"}
    assert happiness_rating(item) == ("42", rating, WHEN)
    assert rating in RATINGS


def test_the_ticket_may_come_included_and_the_time_in_milliseconds() -> None:
    item = {"rating": "GOOD", "ratedTime": int(WHEN.timestamp() * 1000),
            "ticket": {"id": 42, "subject": "Help"}}
    assert happiness_rating(item) == ("42", "good", WHEN)


@pytest.mark.parametrize("item", [
    {"rating": "GOOD", "ratedTime": "2026-12-02T10:00:00.000Z"},  # no ticket
    {"rating": "GREAT", "ratedTime": "2026-12-02T10:00:00.000Z", "ticketId": "42"},
    {"rating": "GOOD", "ticketId": "42"},  # no time
    {"rating": "GOOD", "ratedTime": "yesterday", "ticketId": "42"},
    {"rating": "GOOD", "ratedTime": "2026-12-02T10:00:00.000Z", "ticket": "42"}])
def test_an_item_without_its_ticket_time_or_a_known_rating_is_none(
        item: dict[str, Any]) -> None:
    assert happiness_rating(item) is None
