"""A remote store's capture names the fields a fetched record changed as the
embedded stores' capture does: columns, and custom fields key by key."""

from __future__ import annotations

from adapters.remote_capture import changed_fields


def test_custom_fields_are_named_key_by_key() -> None:
    before = {"last_name": "Ann", "phone": "1", "custom": {"cf_region": "EU", "cf_tier": "1"},
              "modified_time": "t0"}
    after = {"last_name": "Ann", "phone": "2",
             "custom": {"cf_region": "US", "cf_size": "3"}, "modified_time": "t1"}
    assert changed_fields(before, after) == [
        "custom.cf_region", "custom.cf_size", "custom.cf_tier", "phone"]


def test_a_field_not_fetched_is_not_a_change() -> None:
    before = {"last_name": "Ann", "phone": "1", "custom": {"cf_region": "EU"}}
    assert changed_fields(before, {"last_name": "Ann"}) == []
    assert changed_fields(before, {"last_name": "Ann", "custom": {"cf_region": "EU"}}) == []
