"""What a desk profile sees of a CRM record (PERM-01 … PERM-03): every item at full,
restricted and none, every field of the answer checked."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from daemon.service.crm_view import (
    LISTED_ITEMS,
    CrmRecord,
    NothingToShow,
    account_info,
    assemble,
    contact_info,
    profile_named,
    with_id,
)
from projections.people import ACCESSES, ITEMS, RESTRICTED_FIELDS, DeskProfile, Item

# A CRM contact as the embedded CRM's events give it, and one of each item hanging off it.
CONTACT = contact_info(with_id("7", {
    "id": 7, "first_name": "Ana", "last_name": "Souza", "email": "ana@example.com",
    "secondary_email": None, "phone": "+55 11 5555", "mobile": "+55 11 9999",
    "account_id": 3, "custom": {"vip": True}, "created_time": "2026-01-02T10:00:00+00:00",
    "modified_time": "2026-01-03T10:00:00+00:00"}), "Acme")
DEAL = with_id("40", {"id": 40, "deal_name": "Renewal", "stage": "open", "amount": 1200,
                      "contact_id": 7, "account_id": 3,
                      "created_time": "2026-01-04T10:00:00+00:00",
                      "modified_time": "2026-01-04T10:00:00+00:00"})
_PARENT = {"parent_module": "contacts", "parent_id": 7,
           "created_time": "2026-01-05T10:00:00+00:00",
           "modified_time": "2026-01-05T10:00:00+00:00"}
NOTE = with_id("50", {"id": 50, "content": "wants a discount", **_PARENT})
CALL = with_id("60", {"id": 60, "subject": "Intro call", "duration_seconds": 300, **_PARENT})
EVENT = with_id("70", {"id": 70, "subject": "Demo", "starts_at": "2026-02-01T15:00:00+00:00",
                       **_PARENT})
TASK = with_id("80", {"id": 80, "subject": "Send quote", "due_date": "2026-02-03",
                      "status": "open", **_PARENT})
FULL: dict[Item, dict[str, Any]] = {"info": CONTACT, "deals": DEAL, "notes": NOTE,
                                    "calls": CALL, "events": EVENT, "tasks": TASK}
RECORD = CrmRecord(CONTACT, {item: [FULL[item]] for item in LISTED_ITEMS})

# What must never reach a restricted profile, per item: contact details, amounts, contents.
SECRET: dict[Item, tuple[str, ...]] = {
    "info": ("email", "phone", "mobile", "custom", "first_name", "last_name"),
    "deals": ("amount", "contact_id", "account_id"),
    "notes": ("content",),
    "calls": ("duration_seconds",),
    "events": ("parent_id",),
    "tasks": ("parent_id",),
}


def _profile(access: dict[Item, str], **kwargs: Any) -> DeskProfile:
    return DeskProfile(name="Light Agent", access=access, **kwargs)  # type: ignore[arg-type]


def _seen(profile: DeskProfile) -> dict[str, Any]:
    answer = assemble(profile, "contacts", "12", [RECORD])
    assert set(answer) == {"desk", "profile", "shows", "access", "records"}
    assert answer["desk"] == {"module": "contacts", "id": "12"}
    assert answer["profile"] == "Light Agent"
    assert answer["shows"] == profile.shows
    assert answer["access"] == {item: profile.access_to(item) for item in ITEMS}
    assert len(answer["records"]) == 1
    shown: dict[str, Any] = answer["records"][0]
    return shown


def _one(shown: dict[str, Any], item: Item) -> dict[str, Any]:
    if item == "info":
        value: dict[str, Any] = shown["info"]
        return value
    assert len(shown[item]) == 1
    value = shown[item][0]
    return value


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize("access", ACCESSES)
def test_each_item_alone_at_each_access(item: Item, access: str) -> None:
    """One item at full, restricted or none, every other item none: the answer holds that
    item only, with every field (full), exactly the restricted fields, or not at all."""
    access_map = dict.fromkeys(ITEMS, "none") | {item: access}
    shown = _seen(_profile(access_map))
    if access == "none":
        assert shown == {}
        return
    assert set(shown) == {item}
    seen = _one(shown, item)
    if access == "full":
        assert seen == FULL[item]
    else:
        assert list(seen) == list(RESTRICTED_FIELDS[item])
        assert seen == {name: FULL[item][name] for name in RESTRICTED_FIELDS[item]}
        assert not set(SECRET[item]) & set(seen)


def test_every_restricted_field_exists_in_the_data() -> None:
    """A restricted field the data does not have would always be null: each is there."""
    for item in ITEMS:
        for name in RESTRICTED_FIELDS[item]:
            assert FULL[item].get(name) is not None, (item, name)


def test_a_restricted_profile_sees_nothing_it_must_not() -> None:
    """Everything restricted: every field of every item is a restricted one, and no value
    that is not in a restricted field appears anywhere in the answer."""
    shown = _seen(_profile(dict.fromkeys(ITEMS, "restricted")))
    assert set(shown) == set(ITEMS)
    allowed = set()
    for item in ITEMS:
        seen = _one(shown, item)
        assert set(seen) == set(RESTRICTED_FIELDS[item])
        allowed |= {repr(value) for value in seen.values()}
    hidden = {repr(FULL[item][name]) for item in ITEMS for name in SECRET[item]}
    assert not hidden & allowed
    assert "ana@example.com" not in repr(shown) and "1200" not in repr(shown)
    assert "wants a discount" not in repr(shown)


def test_mixed_access_is_per_item() -> None:
    """Every combination of access over the six items gives each item its own access."""
    for combo in itertools.product(ACCESSES, repeat=len(ITEMS)):
        access_map: dict[Item, str] = dict(zip(ITEMS, combo, strict=True))
        shown = _seen(_profile(access_map))
        assert set(shown) == {item for item, access in access_map.items() if access != "none"}
        for item in ITEMS:
            if access_map[item] == "none":
                continue
            expected = (FULL[item] if access_map[item] == "full"
                        else {n: FULL[item][n] for n in RESTRICTED_FIELDS[item]})
            assert _one(shown, item) == expected


def test_an_item_the_profile_does_not_name_is_full() -> None:
    """``DeskProfile.access`` leaves an item out: it is full (the people module's rule)."""
    shown = _seen(_profile({"deals": "none"}))
    assert "deals" not in shown
    assert _one(shown, "notes") == NOTE and _one(shown, "info") == CONTACT


def test_hidden_integration_is_nothing_with_a_reason() -> None:
    """PERM-01: a profile that does not see the integration gets a reason, not data."""
    with pytest.raises(NothingToShow, match="hidden from desk profile 'Light Agent'"):
        assemble(_profile({}, visible=False), "contacts", "12", [RECORD])


def test_no_access_to_information_hides_which_record_it_is() -> None:
    """With info at none (the rest restricted), not even the CRM contact's id is shown."""
    shown = _seen(_profile(dict.fromkeys(ITEMS, "restricted") | {"info": "none"}))
    assert "info" not in shown and set(shown) == set(LISTED_ITEMS)
    assert not any(value in ("7", 7) for item in LISTED_ITEMS
                   for value in _one(shown, item).values())


def test_unknown_or_unnamed_profile() -> None:
    profiles = {"Agent": DeskProfile(name="Agent")}
    assert profile_named(profiles, "Agent") is profiles["Agent"]
    with pytest.raises(NothingToShow, match="no desk profile is named 'Nobody'"):
        profile_named(profiles, "Nobody")
    with pytest.raises(NothingToShow, match="name the desk profile"):
        profile_named(profiles, None)


def test_names_of_contacts_and_accounts() -> None:
    """``name`` and ``account_name``, which a restricted view keeps, are derived."""
    assert CONTACT["name"] == "Ana Souza" and CONTACT["account_name"] == "Acme"
    assert contact_info({"first_name": None, "last_name": " Lee "}, None)["name"] == "Lee"
    assert contact_info({}, None) == {"name": None, "account_name": None}
    assert account_info({"account_name": "Acme"}) == {"account_name": "Acme", "name": "Acme"}
