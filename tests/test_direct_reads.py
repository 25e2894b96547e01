"""Direct reads (bff.db.engine.DirectRead, Database.fetch): on MariaDB straight through
the driver, packed or row by row; on SQLite through SQLAlchemy. Each must return what
the same statement returns through SQLAlchemy, on coupons in every state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from http import HTTPStatus

from bff.db.engine import DirectRead
from bff.keys import DB
from tests.helpers import claim_ok, put_product, redeem_ok, shop_url
from widgets.coupon_price.user_facts import USABLE, USABLE_DIRECT, read_usable


async def test_a_direct_read_returns_what_sqlalchemy_returns(
    client, clock, make_template, auth, merchant
):
    user = auth("user", sub="u1")
    relative = await make_template(per_user_limit=5)
    # A fixed window with microseconds, so the packed form's microseconds are checked.
    starts = clock.now() - timedelta(hours=1)
    ends = clock.now() + timedelta(days=3, microseconds=123_457)
    fixed = await make_template(
        per_user_limit=3,
        validity={"type": "absolute", "start": starts.isoformat(), "end": ends.isoformat()},
    )
    coupons = [await claim_ok(client, user, relative["id"]) for _ in range(4)]
    coupons += [await claim_ok(client, user, fixed["id"]) for _ in range(2)]
    await put_product(client, merchant, "p1", 39900)
    # One locked (out of the usable ones), one revoked.
    service = auth("service", shop="s1", sub="order-system")
    await redeem_ok(
        client,
        service,
        "o1",
        "u1",
        [{"product_id": "p1", "quantity": 1}],
        [coupons[0]["coupon_id"]],
    )
    revoke = await client.post(
        shop_url(f"/admin/coupons/{coupons[1]['coupon_id']}/revoke"), headers=merchant
    )
    assert revoke.status in (HTTPStatus.OK, HTTPStatus.NO_CONTENT), await revoke.text()
    db = client.app[DB]
    now = clock.now()
    deadline = now - timedelta(minutes=15)
    params = {"shop_id": "s1", "user_id": "u1", "now": now, "deadline": deadline}
    expected = await db.read(lambda conn: read_usable(conn, "s1", "u1", now, deadline))
    packed = sorted(await db.fetch(USABLE_DIRECT, params))
    by_rows = sorted(await db.fetch(DirectRead(USABLE), params))
    assert packed == by_rows == sorted((c.coupon_id, c.template_id, c.valid_to) for c in expected)
    assert len(packed) == 4
    assert all(valid_to.tzinfo is UTC for *_, valid_to in packed)
    assert any(valid_to.microsecond == ends.microsecond for *_, valid_to in packed)
    # No coupon: the packed form's empty answer.
    nobody = {**params, "user_id": "nobody"}
    assert await db.fetch(USABLE_DIRECT, nobody) == []


def test_a_packed_result_cut_short_is_read_again_row_by_row():
    """group_concat_max_len cut the list: the count says so, and fetch reads the rows."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    whole = USABLE_DIRECT.unpacked([("7,3,1000001;8,3,2", 2)])
    assert whole == [
        (7, 3, epoch + timedelta(microseconds=1000001)),
        (8, 3, epoch + timedelta(microseconds=2)),
    ]
    assert USABLE_DIRECT.unpacked([("7,3,1000001", 2)]) is None
    assert USABLE_DIRECT.unpacked([(None, 0)]) == []


async def test_the_users_facts_read_directly_equal_sqlalchemys(
    client, make_template, auth, merchant
):
    """USER_FACTS (scalar subqueries, an outer join that gives a user without coupons one
    row of NULLs): the same rows both ways, for a member with coupons and for nobody."""
    from tests.helpers import enrol
    from widgets.coupon_price.user_facts import USER_FACTS_DIRECT, read_user_rows

    await enrol(client, merchant, "u1", 2)
    template = await make_template(per_user_limit=3)
    user = auth("user", sub="u1")
    for _ in range(2):
        await claim_ok(client, user, template["id"])
    db = client.app[DB]
    for user_id in ("u1", "nobody"):
        params = {"shop_id": "s1", "user_id": user_id}
        expected = await db.read(lambda conn, u=user_id: read_user_rows(conn, "s1", u))
        got = await db.fetch(USER_FACTS_DIRECT, params)
        assert sorted(got, key=repr) == sorted((tuple(r) for r in expected), key=repr)
        assert got and (user_id == "nobody") == (got[0][3] is None)
        member_level, active = got[0][0], got[0][1]
        assert (member_level, bool(active)) == ((2, True) if user_id == "u1" else (None, False))
