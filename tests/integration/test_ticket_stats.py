"""Customer statistics (TICKET-06) against a hand-computed example of 22 tickets: every
figure of three CRM contacts and two accounts (first responses, resolutions with a
reopened ticket, overdue at the event time, ratings), a contact linked after its
tickets, a replay that rebuilds the projection row for row, and the API and the CLI
answering with the same figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from daemon.cli import cli
from daemon.http.server import build_app
from daemon.service.ticket_stats import statistics
from projections.batch import reset_offset
from projections.db import Conn
from projections.events import ChangeEvent
from projections.registry import spec
from projections.replay import EventLogSource, rebuild_from_events
from projections.ticket_stats import StatisticsProjection
from tests.support.api import api_context
from tests.support.batches import deliver_batches

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
MIN = 60.0  # seconds


def at(minute: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute)


class Log:
    """The example's events, each logged at its minute (its capture time)."""

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.tickets: dict[int, dict[str, Any]] = {}
        self.created: dict[int, float] = {}

    def _add(self, source: str, module: str, rid: int, minute: float, values: dict[str, Any],
             *, op: str = "update", created: float | None = None) -> None:
        self.events.append(ChangeEvent(
            event_id=uuid.uuid4(), source=source, module=module,  # type: ignore[arg-type]
            record_id=str(rid), op=op, values=dict(values),  # type: ignore[arg-type]
            modified_at=at(minute), created_at=at(minute if created is None else created),
            origin="user", captured_at=at(minute)))

    def crm_contact(self, rid: int, minute: float, account: int | None) -> None:
        self._add("crm", "contacts", rid, minute, {"last_name": f"c{rid}", "account_id": account})

    def crm_lead(self, rid: int, minute: float, email: str | None, *,
                 deleted: bool = False, converted: bool = False) -> None:
        self._add("crm", "leads", rid, minute,
                  {"last_name": f"l{rid}", "email": email, "deleted": deleted,
                   "converted": converted}, op="delete" if deleted else "update")

    def ticket(self, rid: int, contact: int, created: float, *, due: float | None = None,
               logged: float | None = None) -> None:
        self.created[rid] = created
        self.tickets[rid] = {"subject": f"ticket {rid}", "contact_id": contact,
                             "status": "Open", "status_type": "Open", "deleted": False,
                             "due_date": None if due is None else at(due).isoformat(),
                             "rating": None}
        self._add("desk", "tickets", rid, created if logged is None else logged,
                  self.tickets[rid], op="create", created=created)

    def change(self, rid: int, minute: float, **values: Any) -> None:
        self.tickets[rid].update(values)
        op = "delete" if values.get("deleted") else "update"
        self._add("desk", "tickets", rid, minute, self.tickets[rid], op=op,
                  created=self.created[rid])

    def close(self, rid: int, minute: float) -> None:
        self.change(rid, minute, status="Closed", status_type="Closed")

    def thread(self, tid: int, ticket: int, minute: float, *, direction: str = "out",
               kind: str = "reply", deleted_at: float | None = None) -> None:
        values = {"ticket_id": ticket, "direction": direction, "kind": kind, "deleted": False}
        self._add("desk", "ticket_threads", tid, minute, values, op="create")
        if deleted_at is not None:
            self._add("desk", "ticket_threads", tid, deleted_at, {**values, "deleted": True},
                      op="delete", created=minute)

    def in_log_order(self) -> list[ChangeEvent]:
        return sorted(self.events, key=lambda e: e.captured_at)


ANA, BO, CY, DEE, STRANGER = 11, 12, 13, 14, 15  # desk contacts
CRM = {ANA: "501", BO: "502", CY: "503", DEE: "504"}  # their CRM twins (the links)
ACCOUNT, OTHER_ACCOUNT = "901", "902"


def example() -> Log:
    """22 tickets; the minutes are from T0. The newest event is at minute 4320 (3 days)."""
    log = Log()
    log.crm_contact(501, 1, 901)
    log.crm_contact(502, 2, 902)
    log.crm_contact(502, 50, 901)  # Bo moves to account 901
    log.crm_contact(503, 3, 902)
    log.crm_contact(504, 4, 901)
    # Ana: 7 live tickets (T7 in the recycle bin, T21 deleted).
    log.ticket(1, ANA, 0, due=240)
    log.thread(101, 1, 30)                             # first response 30
    log.thread(102, 1, 90)
    log.close(1, 120)                                  # resolution 120
    log.change(1, 130, rating="good")
    log.ticket(2, ANA, 60, due=600)                    # open, overdue
    log.thread(103, 2, 70, direction="in")             # the customer's: no response
    log.thread(104, 2, 80, kind="comment")             # internal: no response
    log.thread(105, 2, 180)                            # first response 120
    log.ticket(3, ANA, 120, due=200)
    log.thread(106, 3, 135)                            # first response 15
    log.close(3, 240)                                  # resolution 120 (the first close)
    log.change(3, 300, status="Open", status_type="Open")
    log.close(3, 600)
    log.change(3, 610, rating="okay")
    log.ticket(4, ANA, 200)                            # open, no due date, no reply
    log.ticket(5, ANA, 300)
    log.thread(107, 5, 360)                            # first response 60
    log.close(5, 1740)                                 # resolution 1440
    log.change(5, 1750, rating="bad")
    log.ticket(6, ANA, 400, due=5000)                  # on hold, due later
    log.change(6, 410, status="On Hold", status_type="On Hold")
    log.thread(108, 6, 420)                            # first response 20
    log.ticket(7, ANA, 500)
    log.change(7, 520, rating="bad")
    log.change(7, 530, deleted=True)                   # recycle bin: counts nowhere
    log.ticket(21, ANA, 510)
    log.change(21, 540, deleted=True)
    log.ticket(22, ANA, 2000, due=3000)
    log.thread(109, 22, 2010)                          # first response 10
    log.close(22, 2900)                                # resolution 900
    log.change(22, 2905, rating="good")
    # Bo: 5 tickets.
    log.ticket(8, BO, 100)
    log.thread(110, 8, 160)                            # first response 60
    log.close(8, 400)                                  # resolution 300
    log.change(8, 410, rating="good")
    log.ticket(9, BO, 150, due=1000)                   # open, overdue after minute 1000
    log.thread(111, 9, 155, deleted_at=156)            # deleted: does not count
    log.thread(112, 9, 250)                            # first response 100
    log.ticket(10, BO, 500, due=2000)                  # a custom status typed On Hold
    log.change(10, 505, status="Waiting on customer", status_type="On Hold")
    log.ticket(11, BO, 600)
    log.thread(113, 11, 610)                           # first response 10
    log.close(11, 660)                                 # resolution 60
    log.change(11, 670, rating="okay")
    log.ticket(12, BO, 700, due=4400, logged=710)      # its reply is logged first
    log.thread(114, 12, 705)                           # first response 5
    # Cy: 3 tickets, account 902.
    log.ticket(13, CY, 800)
    log.thread(115, 13, 830)                           # first response 30
    log.close(13, 860)                                 # resolution 60
    log.change(13, 870, rating="good")
    log.ticket(14, CY, 900, due=4300)                  # overdue: 4300 < 4320
    log.ticket(15, CY, 1000, due=4320)                 # due at the event time: not overdue
    log.change(15, 1010, status="Escalated", status_type="Escalated")
    log.thread(116, 15, 1090)                          # first response 90
    # Dee: 3 tickets; her link is made after them.
    log.ticket(16, DEE, 1100)
    log.thread(117, 16, 1160)                          # first response 60
    log.close(16, 1310)                                # resolution 210
    log.change(16, 1320, rating="bad")
    log.ticket(17, DEE, 1200, due=1300)                # overdue
    log.ticket(18, STRANGER, 1300)
    log.thread(118, 18, 1330)                          # first response 30
    log.change(18, 1400, contact_id=DEE)               # the ticket passes to Dee
    # The stranger's (never linked): count nowhere.
    log.ticket(19, STRANGER, 1400)
    log.close(19, 1500)
    log.change(19, 1510, rating="good")
    log.ticket(20, STRANGER, 1500, due=1600)
    log.crm_contact(503, 4320, 902)                    # the newest event
    return log


def figures(stats: dict[str, Any]) -> dict[str, Any]:
    keys = ("total_tickets", "open_tickets", "overdue_tickets", "responded_tickets",
            "average_first_response_seconds", "resolved_tickets",
            "average_resolution_seconds", "ratings")
    return {key: stats[key] for key in keys}


def expect(total: int, open_: int, overdue: int, responded: int, response_min: float | None,
           resolved: int, resolution_min: float | None, good: int, okay: int, bad: int
           ) -> dict[str, Any]:
    return {"total_tickets": total, "open_tickets": open_, "overdue_tickets": overdue,
            "responded_tickets": responded,
            "average_first_response_seconds": None if response_min is None
            else response_min * MIN,
            "resolved_tickets": resolved,
            "average_resolution_seconds": None if resolution_min is None
            else resolution_min * MIN,
            "ratings": {"good": good, "okay": okay, "bad": bad,
                        "unrated": total - good - okay - bad}}


# Hand-computed (minutes): Ana's first responses 30, 120, 15, 60, 20, 10 (255 / 6),
# resolutions 120, 120 (first close of the reopened T3), 1440, 900 (2580 / 4).
ANA_FIGURES = expect(7, 3, 1, 6, 42.5, 4, 645, 2, 1, 1)
# Bo: responses 60, 100, 10, 5 (175 / 4); resolutions 300, 60; overdue T9 and T10.
BO_FIGURES = expect(5, 3, 2, 4, 43.75, 2, 180, 1, 1, 0)
CY_FIGURES = expect(3, 2, 1, 2, 60, 1, 60, 1, 0, 0)
DEE_FIGURES = expect(3, 2, 1, 2, 45, 1, 210, 0, 0, 1)
# Account 901 before Dee's link: Ana and Bo (responses 430 / 10, resolutions 2940 / 6);
# after it, Dee too (520 / 12, 3150 / 7).
ACCOUNT_BEFORE = expect(12, 6, 3, 10, 43, 6, 490, 3, 2, 1)
ACCOUNT_AFTER = expect(15, 8, 4, 12, 520 / 12, 7, 450, 3, 2, 2)


async def deliver(conn: Conn, events: list[ChangeEvent], *, start: int,
                  size: int) -> int:
    """Apply ``events`` from the log offset ``start`` in batches of ``size``, each with a
    fresh projection (a restart), every one applied; the next offset."""
    offset, applied = await deliver_batches(conn, events, start=start, size=size,
                                            projections=lambda: [StatisticsProjection()])
    assert applied == len(events)
    return offset


async def link(conn: Conn, desk_contact: int) -> None:
    await conn.execute(
        "INSERT INTO sync.links (module, desk_id, crm_id, linked_at, updated_at)"
        " VALUES ('contacts', $1, $2, now(), now())", str(desk_contact), CRM[desk_contact])


async def test_statistics_match_the_hand_computed_example_and_a_replay_rebuilds_them(
        pool: asyncpg.Pool) -> None:
    """Every figure of the 22 tickets, at two event times; a link made later counts the
    contact's tickets at once; a rebuild from the log finds nothing to change, and
    restores a damaged projection row for row."""
    events = example().in_log_order()
    async with pool.acquire() as conn:
        for desk_contact in (ANA, BO, CY):
            await link(conn, desk_contact)
        await reset_offset(conn, "g", ("t", 0), 0)
        early = [e for e in events if e.captured_at <= at(1000)]
        offset = await deliver(conn, early, start=0, size=7)
        # At minute 1000 Ana's T2 (due 600) is overdue; Bo's T9 is due at 1000: not yet.
        assert (await statistics(pool, "contacts", "501"))["overdue_tickets"] == 1
        bo_early = await statistics(pool, "contacts", "502")
        assert bo_early["as_of"] == at(1000) and bo_early["overdue_tickets"] == 0
        await deliver(conn, events[len(early):], start=offset, size=5)

    assert figures(await statistics(pool, "contacts", "501")) == ANA_FIGURES
    assert figures(await statistics(pool, "contacts", "502")) == BO_FIGURES
    assert figures(await statistics(pool, "contacts", "503")) == CY_FIGURES
    assert figures(await statistics(pool, "accounts", OTHER_ACCOUNT)) == CY_FIGURES
    assert figures(await statistics(pool, "contacts", "504")) == expect(
        0, 0, 0, 0, None, 0, None, 0, 0, 0)
    assert figures(await statistics(pool, "accounts", ACCOUNT)) == ACCOUNT_BEFORE

    async with pool.acquire() as conn:
        await link(conn, DEE)
    assert figures(await statistics(pool, "contacts", "504")) == DEE_FIGURES
    account = await statistics(pool, "accounts", ACCOUNT)
    assert figures(account) == ACCOUNT_AFTER
    assert account["as_of"] == at(4320)

    ana = await statistics(pool, "contacts", "501")
    assert [t["ticket_id"] for t in ana["tickets"]] == ["22", "6", "5", "4", "3", "2", "1"]
    lines = {t["ticket_id"]: t for t in ana["tickets"]}
    assert lines["3"]["status_type"] == "Closed" and lines["3"]["resolution_seconds"] == 120 * MIN
    assert lines["3"]["rating"] == "okay" and lines["3"]["overdue"] is False
    assert lines["2"]["overdue"] is True and lines["2"]["due_date"] == at(600)
    assert lines["4"]["first_response_seconds"] is None
    assert lines["4"]["resolution_seconds"] is None

    async with pool.acquire() as conn:
        rows = await table_rows(conn)
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=True)
        assert report.changes == 0 and report.unit == "records' last events"
        per_event = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                              dry_run=True, per_event=True)
        assert per_event.events == len(events) and per_event.changes == 0
        await conn.execute("UPDATE ticket_stats.tickets SET first_closed_at = NULL")
        await conn.execute("DELETE FROM ticket_stats.replies WHERE thread_id = '101'")
        await conn.execute("UPDATE ticket_stats.clock SET at = $1", at(0))
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=False)
        assert report.changes == 9 + 1 + 1  # the closed tickets, a reply, the clock
        assert await table_rows(conn) == rows
    assert figures(await statistics(pool, "accounts", ACCOUNT)) == ACCOUNT_AFTER


async def table_rows(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
            for table in spec("statistics").tables}


async def test_the_api_and_the_cli_answer_with_the_figures(pool: asyncpg.Pool,
                                                           tmp_path: Path) -> None:
    """GET /api/v1/crm/{contacts|accounts}/{id}/statistics with a viewer's token, and
    `syncd tickets stats`, table and --json, give the hand-computed figures."""
    async with pool.acquire() as conn:
        for desk_contact in (ANA, BO, CY, DEE):
            await link(conn, desk_contact)
        await reset_offset(conn, "g", ("t", 0), 0)
        await deliver(conn, example().in_log_order(), start=0, size=50)
    token = "viewer-token-for-statistics"
    ctx = api_context(pool, integration=None, tokens={token: ("reader", "viewer")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server:
        client_env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": token,
                      "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}

        async def syncd(*args: str) -> Any:
            return await asyncio.to_thread(CliRunner().invoke, cli, list(args),
                                           env=client_env)

        result = await syncd("tickets", "stats", "--account", ACCOUNT, "--json")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        assert answer["module"] == "accounts" and answer["id"] == ACCOUNT
        assert figures(answer) == ACCOUNT_AFTER
        assert answer["as_of"] == "2026-11-05T09:00:00Z"  # minute 4320
        assert len(answer["tickets"]) == 15

        result = await syncd("tickets", "stats", "--contact", "502")
        assert result.exit_code == 0, result.output
        assert "CRM contact 502" in result.output
        assert "overdue                 2 (at 2026-11-05T09:00:00Z)" in result.output
        assert "average first response  0h44 over 4 ticket(s)" in result.output
        assert "average resolution      3h00 over 2 ticket(s)" in result.output
        assert "good 1, okay 1, bad 0, unrated 3" in result.output

        result = await syncd("tickets", "stats", "--contact", "1", "--account", "2")
        assert result.exit_code == 2 and "one of --contact ID or --account ID" in result.output
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}/api/v1/crm"
            async with session.get(f"{base}/contacts/501/statistics") as response:
                assert response.status == 401
            async with session.get(f"{base}/contacts/501/statistics",
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200
                assert figures(await response.json()) == ANA_FIGURES
            async with session.get(f"{base}/leads/501/statistics",
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 404  # leads have no statistics


# The deal's linked tickets (TICKET-05), whoever their contact is: Ana's T1 and T2,
# Bo's T9, Cy's T14, the stranger's T19 (never linked to a CRM contact), and Ana's T7
# (in the recycle bin: counts nowhere). By hand, at minute 4320: open T2, T9, T14, all
# three overdue (due 600, 1000, 4300); first responses 30 (T1), 120 (T2), 100 (T9:
# the deleted reply at 155 does not count): 250 / 3; resolutions 120 (T1), 100 (T19):
# 220 / 2; ratings good 2 (T1, T19), unrated 3.
DEAL, EMPTY_DEAL = "801", "802"
DEAL_TICKETS = ("1", "2", "9", "14", "19", "7")
DEAL_FIGURES = expect(5, 3, 3, 3, 250 / 3, 2, 110, 2, 0, 0)
# At minute 1000: T19 is not created yet; T2 is overdue, T9 (due 1000) and T14 (due 4300)
# not yet; T1 alone is resolved.
DEAL_AT_1000 = expect(4, 3, 1, 3, 250 / 3, 1, 120, 1, 0, 0)


def deal_line(rid: int, created: float, status: str, *, due: float | None = None,
              overdue: bool = False, response: float | None = None,
              resolution: float | None = None, rating: str | None = None) -> dict[str, Any]:
    return {"ticket_id": str(rid), "subject": f"ticket {rid}", "status_type": status,
            "created_at": at(created), "due_date": None if due is None else at(due),
            "overdue": overdue,
            "first_response_seconds": None if response is None else response * MIN,
            "resolution_seconds": None if resolution is None else resolution * MIN,
            "rating": rating}


DEAL_LINES = [  # newest first, every field by hand
    deal_line(19, 1400, "Closed", resolution=100, rating="good"),
    deal_line(14, 900, "Open", due=4300, overdue=True),
    deal_line(9, 150, "Open", due=1000, overdue=True, response=100),
    deal_line(2, 60, "Open", due=600, overdue=True, response=120),
    deal_line(1, 0, "Closed", due=240, response=30, resolution=120, rating="good"),
]


async def link_deal(conn: Conn) -> None:
    """The deal's links as the ticket actions projection keeps them (its own tests apply
    link actions; the statistics only read the table)."""
    await conn.execute(
        "INSERT INTO ticket_actions.deal_links (ticket_id, deal_id, linked_by, linked_at)"
        " SELECT unnest($1::text[]), $2, 'adm', $3", list(DEAL_TICKETS), DEAL, at(0))


async def test_a_deals_statistics_are_its_linked_tickets(pool: asyncpg.Pool,
                                                         tmp_path: Path) -> None:
    """A deal's statistics (TICKET-06) over its linked tickets, at two event times, every
    figure and line by hand; a deal with no ticket is all zero; the API and `syncd
    tickets stats --deal` give the same figures; a rebuild after them changes nothing
    (the deal's statistics keep no state of their own)."""
    events = example().in_log_order()
    async with pool.acquire() as conn:
        await link_deal(conn)
        await reset_offset(conn, "g", ("t", 0), 0)
        early = [e for e in events if e.captured_at <= at(1000)]
        offset = await deliver(conn, early, start=0, size=7)
        deal = await statistics(pool, "deals", DEAL)
        assert deal["as_of"] == at(1000) and figures(deal) == DEAL_AT_1000
        await deliver(conn, events[len(early):], start=offset, size=5)

    deal = await statistics(pool, "deals", DEAL)
    assert deal == {"module": "deals", "id": DEAL, "as_of": at(4320), **DEAL_FIGURES,
                    "tickets": DEAL_LINES}
    assert figures(await statistics(pool, "deals", EMPTY_DEAL)) == expect(
        0, 0, 0, 0, None, 0, None, 0, 0, 0)

    token = "viewer-token-for-deal-statistics"
    ctx = api_context(pool, integration=None, tokens={token: ("reader", "viewer")})
    async with TestServer(build_app({}, api=ctx), host="127.0.0.1") as server, \
            aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.port}/api/v1/crm/deals/{DEAL}"
                               "/statistics",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["module"] == "deals" and answer["as_of"] == "2026-11-05T09:00:00Z"
        assert figures(answer) == DEAL_FIGURES
        assert [t["ticket_id"] for t in answer["tickets"]] == ["19", "14", "9", "2", "1"]

        env = {"SYNCD_DATA_DIR": str(tmp_path), "SYNCD_API_TOKEN": token,
               "SYNCD_HTTP_LISTEN": f"127.0.0.1:{server.port}"}
        result = await asyncio.to_thread(CliRunner().invoke, cli,
                                         ["tickets", "stats", "--deal", DEAL], env=env)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[:7] == [
            f"CRM deal {DEAL}",
            "tickets                 5",
            "open                    3",
            "overdue                 3 (at 2026-11-05T09:00:00Z)",
            "average first response  1h23 over 3 ticket(s)",
            "average resolution      1h50 over 2 ticket(s)",
            "ratings                 good 2, okay 0, bad 0, unrated 3"]
        assert [line.split()[0] for line in lines[10:]] == ["19", "14", "9", "2", "1"]
        assert lines[10].split() == ["19", "ticket", "19", "Closed", "-", "1h40", "good"]

    async with pool.acquire() as conn:
        report = await rebuild_from_events(conn, spec("statistics"), EventLogSource(),
                                           dry_run=True)
        assert report.changes == 0
