"""Zoho CRM's asynchronous bulk read (``zoho/crm-oas`` ``v8.0/bulk_read.json``), the
first sync's read of a whole module (``adapters.remote_bulk.BulkReadable``).

- ``POST /crm/bulk/v8/read`` with the module, the fields and the ``page`` (200,000
  records a page, Zoho's): the job's id.
- ``GET /crm/bulk/v8/read/{job_id}``: its ``state`` (``ADDED``, ``QUEUED``, ``IN
  PROGRESS``, ``COMPLETED``) and, once done, the ``result`` (``count``,
  ``more_records``). A job Zoho no longer keeps (404 ``RESOURCE_NOT_FOUND``; a
  result is kept a day) is ``JobGone``: its page is asked for again.
- ``GET /crm/bulk/v8/read/{job_id}/result``: a ZIP holding one CSV, a header of
  the fields' API names (the record's id is ``Id``, a lookup holds the looked-up
  record's id) and a row a record.

The bulk API spends little of the day's API credits (a call a job, a state and a
download), where a list reads 200 records a call. Zoho's bulk read can also post to
a callback URL when a job is done; the daemon asks for the state instead (every
``poll`` seconds, growing), so it needs no route of its own for it.
"""

from __future__ import annotations

import csv
import io
import zipfile

from adapters.remote_bulk import BulkPage, JobGone
from adapters.write_errors import Refused, Transient
from adapters.zoho.crm import ZohoCrm
from adapters.zoho.crm_fields import (
    ACTIVITY_MODULES,
    STANDING_MODULES,
    from_bulk_row,
    module_name,
)
from projections.stores.port import Values

BULK_PATH = "/crm/bulk/v8/read"


class CrmBulkRead:
    def __init__(self, crm: ZohoCrm) -> None:
        self.crm = crm

    def reads(self, module: str) -> bool:
        # The handshake's leads and deals are listed: a lead's conversion is not a
        # column of the bulk read's CSV; so are activities, whose parents' modules are
        # not either.
        return module not in STANDING_MODULES and module not in ACTIVITY_MODULES

    async def start(self, module: str, page: int) -> str:
        answer = await self.crm.client.call("POST", BULK_PATH, for_write=False, json={
            "query": {"module": {"api_name": module_name(module)},
                      "fields": self.crm.fields_asked(module),
                      "page": page}, "file_type": "csv"})
        outcome = (answer.get("data") or [{}])[0] if isinstance(answer, dict) else {}
        if outcome.get("status") != "success":
            raise Transient(f"the bulk read job was not added: {str(answer)[:200]}")
        return str(outcome["details"]["id"])

    async def page(self, job_id: str) -> BulkPage | None:
        try:
            answer = await self.crm.client.call("GET", f"{BULK_PATH}/{job_id}")
        except Refused as err:
            if err.code == "RESOURCE_NOT_FOUND":
                raise JobGone(job_id) from None
            raise
        job = (answer.get("data") or [{}])[0] if isinstance(answer, dict) else {}
        if job.get("state") != "COMPLETED":
            return None
        result = job["result"]
        return BulkPage(count=int(result["count"]), more=bool(result["more_records"]))

    async def readable(self) -> None:
        """Whether bulk reads may be made (the scope ``ZohoCRM.bulk.READ``): the state
        of a job that does not exist, 404 if so, ``Unavailable`` if not."""
        try:
            await self.page("0")
        except JobGone:
            return

    async def rows(self, module: str, job_id: str) -> list[tuple[str, Values]]:
        try:
            body = await self.crm.client.call("GET", f"{BULK_PATH}/{job_id}/result",
                                              raw=True)
        except Refused as err:
            if err.code == "RESOURCE_NOT_FOUND":
                raise JobGone(job_id) from None
            raise
        if not isinstance(body, bytes):
            raise Transient(f"the bulk read result was not a file: {str(body)[:200]}")
        out: list[tuple[str, Values]] = []
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            (name,) = [n for n in archive.namelist() if n.endswith(".csv")]
            with archive.open(name) as file:
                for row in csv.DictReader(io.TextIOWrapper(file, encoding="utf-8-sig")):
                    values = self.crm.polled_values(module, from_bulk_row(module, row))
                    out.append((values.pop("id"), values))
        return out
