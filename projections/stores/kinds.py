"""Which adapter of the store port serves each side: the embedded store in the
daemon's database, unless the side is a remote store (``projections.stores.deferred``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from projections.catalog import Side
from projections.db import Conn
from projections.stores.deferred import DeferredStore, RemoteReads
from projections.stores.embedded import EmbeddedStore
from projections.stores.port import Store


@dataclass(frozen=True)
class StoreKinds:
    remote: Mapping[Side, RemoteReads] = field(default_factory=dict)
    """The sides written through the command outbox, with what the batch reads of each."""

    def adapter(self, conn: Conn, side: Side) -> Store:
        """The side's adapter for a batch on ``conn``."""
        reads = self.remote.get(side)
        return EmbeddedStore(conn, side) if reads is None else DeferredStore(conn, side, reads)

    def deferred(self, side: str) -> bool:
        return side in self.remote


EMBEDDED = StoreKinds()
