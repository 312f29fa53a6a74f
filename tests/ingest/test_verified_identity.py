"""Verified identification (CM_IDENTITY_SECRET, docs/identity.md "Verified identification"):
a unique value on a public request identifies only with identity_hash = HMAC-SHA256(secret,
normalized value); otherwise it is an unverified claim on the visitor's own contact."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from contact_monitor.settings import Settings, SettingsError

SECRET = "s3cret-for-tests-only-0123456789"


def proof(value: str, secret: str = SECRET) -> str:
    """What the README tells a site's server to compute."""
    return hmac.new(secret.encode(), value.strip().lower().encode(), hashlib.sha256).hexdigest()


async def identify(h, browser, email: str) -> dict:
    """A verified visit giving this browser's contact the email, a name and an operator's tag."""
    return await h.event(
        browser, page_url="https://shop.example.com/account", email=email, identity_hash=proof(email),
        firstname="Vera", tags="vip",
    )  # fmt: skip


async def victim(h) -> dict:
    """An identified contact with an email, a name and an operator's tag, known to its browser."""
    async with h.browser() as browser:
        body = await identify(h, browser, "victim@example.com")
    contact = await h.db.contacts.find_one({"_id": body["id"]})
    assert contact["fields"]["email"] == "victim@example.com" and contact["tags"] == ["vip"]
    return contact


@pytest.fixture
async def verified(make_harness):
    async with make_harness(identity_secret=SECRET) as h:
        for alias in ("email", "firstname"):
            await h.field(alias)
        yield h


async def test_an_email_without_proof_takes_nothing_over(verified):
    """The attack of issue 9: an anonymous visitor sends someone else's email, a name and tag
    changes. The victim is untouched, the attacker gets no id of theirs and none of their history."""
    h = verified
    target = await victim(h)
    async with h.browser() as attacker:
        body = await h.event(
            attacker,
            page_url="https://shop.example.com/evil",
            email="victim@example.com",
            firstname="Mallory",
            tags="-vip,owned",
        )
        assert body["id"] != target["_id"]
        assert attacker.cookies["mtc_id"] != target["_id"]
        assert body["sid"] not in {
            d["_id"] for d in await h.db.devices.find({"contact_id": target["_id"]}).to_list()
        }
        assert any("not verified" in warning for warning in body["warnings"])
        await h.pixel(attacker, page_url="https://shop.example.com/evil-2")

    after = await h.db.contacts.find_one({"_id": target["_id"]})
    assert after["fields"] == target["fields"] and after["tags"] == ["vip"]
    assert await h.db.hits.count_documents({"contact_id": target["_id"]}) == 1
    assert await h.db.merges.count_documents({}) == 0

    mallory = await h.db.contacts.find_one({"_id": body["id"]})
    assert mallory["fields"]["firstname"] == "Mallory" and "email" not in mallory["fields"]
    assert "ids" not in mallory and sorted(mallory["tags"]) == ["owned"]
    assert [(c["alias"], c["value"]) for c in mallory["claims"]] == [("email", "victim@example.com")]
    assert await h.db.hits.count_documents({"contact_id": body["id"]}) == 2


async def test_a_wrong_proof_is_no_proof(verified):
    h = verified
    target = await victim(h)
    async with h.browser() as attacker:
        for wrong in (
            proof("other@example.com"),
            proof("victim@example.com", "another-secret-0123456"),
            "zz" * 40,
            "é",
        ):
            body = await h.event(attacker, page_url="p", email="victim@example.com", identity_hash=wrong)
            assert body["id"] != target["_id"]
    assert await h.db.merges.count_documents({}) == 0


async def test_a_valid_proof_identifies_as_without_the_secret(verified):
    """The site's server vouches for the email: the visitor is merged into the known contact,
    as in Mautic-compatible mode. Case and spaces do not matter (the normalized value is hashed)."""
    h = verified
    target = await victim(h)
    async with h.browser() as owner:
        anonymous = await h.event(owner, page_url="https://shop.example.com/a")
        body = await h.event(
            owner,
            page_url="https://shop.example.com/b",
            email=" Victim@Example.COM ",
            identity_hash=proof("victim@example.com").upper(),
        )
    assert body["id"] == target["_id"] and "warnings" not in body
    assert await h.db.merges.find_one({"_id": anonymous["id"]}) is not None
    assert await h.db.hits.count_documents({"contact_id": target["_id"]}) == 3


async def test_an_identified_visitor_is_not_changed_by_a_claim(verified):
    """Someone else on Vera's browser types another email: a claim on Vera's contact, and
    nothing else of that request changes her (fields, tags); her own email needs no proof."""
    h = verified
    async with h.browser() as browser:
        vera = await identify(h, browser, "vera@example.com")
        body = await h.event(browser, page_url="q", email="bob@example.com", firstname="Bob", tags="-vip,bob")
        assert body["id"] == vera["id"]
        assert any("cannot change an identified contact" in warning for warning in body["warnings"])
        same = await h.event(browser, page_url="r", email="vera@example.com", firstname="Vera")
        assert "warnings" not in same
    contact = await h.db.contacts.find_one({"_id": vera["id"]})
    assert contact["fields"]["firstname"] == "Vera" and contact["tags"] == ["vip"]
    assert [(c["alias"], c["value"]) for c in contact["claims"]] == [("email", "bob@example.com")]
    assert await h.db.hits.count_documents({"contact_id": vera["id"]}) == 3


async def test_claims_are_bounded_and_shown_in_the_api(verified):
    h = verified
    async with h.browser() as browser:
        for i in range(25):
            body = await h.event(browser, page_url="p", email=f"guess{i}@example.com")
    contact = await h.db.contacts.find_one({"_id": body["id"]})
    assert [c["value"] for c in contact["claims"]] == [f"guess{i}@example.com" for i in range(5, 25)]
    key = await h.services.storage.api_keys.create("reader", "read")
    query = "query($id: ID!) { contact(id: $id) { claims { field value claimedAt } } }"
    response = await h.client.post(
        "/graphql",
        json={"query": query, "variables": {"id": body["id"]}},
        headers={"Authorization": f"Bearer {key}"},
    )
    claims = response.json()["data"]["contact"]["claims"]
    assert (
        len(claims) == 20 and claims[-1]["field"] == "email" and claims[-1]["value"] == "guess24@example.com"
    )


async def test_a_form_needs_the_proof_too(verified):
    """A form with the victim's email: without the proof a claim, with it (as a hidden form
    field or a plain parameter) the existing contact, as without the secret."""
    h = verified
    target = await victim(h)
    key = await h.services.storage.api_keys.create("admin", "admin")
    mutation = (
        'mutation { createForm(name: "Newsletter", fields: [{name: "email", label: "Email", '
        'contactField: "email", required: true}]) { id } }'
    )
    created = await h.client.post(
        "/graphql", json={"query": mutation}, headers={"Authorization": f"Bearer {key}"}
    )
    form_id = created.json()["data"]["createForm"]["id"]
    async with h.browser() as browser:
        response = await browser.post(
            f"/form/submit?formId={form_id}&ajax=1", data={"mauticform[email]": "victim@example.com"}
        )
        assert response.status_code == 200 and browser.cookies["mtc_id"] != target["_id"]
    async with h.browser() as browser:
        response = await browser.post(
            f"/form/submit?formId={form_id}&ajax=1",
            data={
                "mauticform[email]": "victim@example.com",
                "mauticform[identity_hash]": proof("victim@example.com"),
            },
        )
        assert response.status_code == 200 and browser.cookies["mtc_id"] == target["_id"]


def test_the_secret_must_be_long_enough():
    with pytest.raises(SettingsError, match="CM_IDENTITY_SECRET must be at least 16 characters"):
        Settings.from_env({"CM_IDENTITY_SECRET": "short"})
    settings = Settings.from_env({"CM_IDENTITY_SECRET": "x" * 16})
    assert settings.identity_secret == "x" * 16 and "x" * 16 not in repr(settings)


async def test_the_proof_is_never_taken_from_the_page_url_nor_stored(verified):
    """A link shared with ?email=...&identity_hash=... identifies nobody who opens it, and the
    hash (a reusable credential) is not kept in the stored query."""
    h = verified
    target = await victim(h)
    hashed = proof("victim@example.com")
    for name in ("identity_hash", "identity_hash[]", "%20identity_hash", "IDENTITY_HASH"):
        link = f"https://shop.example.com/p?email=victim%40example.com&{name}={hashed}"
        async with h.browser() as stranger:
            body = await h.event(stranger, page_url=link)
            assert body["id"] != target["_id"], name
    async with h.browser() as owner:
        await h.event(owner, page_url="https://shop.example.com/q", email="victim@example.com",
                      identity_hash=proof("victim@example.com"))  # fmt: skip
    async for hit in h.db.hits.find():
        assert "identity_hash" not in hit["query"]


async def test_a_claim_is_never_resolved_by_ip(make_harness):
    """With CM_TRACK_BY_IP, an unknown visitor sending an email without proof is not taken for
    the contact last seen from the same IP (the victim's office, a carrier's NAT)."""
    async with make_harness(identity_secret=SECRET, track_by_ip=True) as h:
        await h.field("email")
        await h.field("firstname")
        target = await victim(h)
        async with h.browser() as attacker:  # same IP as the victim's browser
            body = await h.event(attacker, page_url="https://shop.example.com/x", email="x@example.com")
            assert body["id"] != target["_id"]
            assert attacker.cookies["mtc_id"] != target["_id"]
        after = await h.db.contacts.find_one({"_id": target["_id"]})
        assert "claims" not in after
