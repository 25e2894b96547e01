"""Request helpers shared by the HTTP test modules (plain functions, no fixtures)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import event

from bff.app import create_app
from bff.clock import ManualClock
from bff.keys import DB
from bff.logs import JsonFormatter
from config.loader import Settings
from tests.conftest import expect, template_body


@contextlib.contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app runs while the block runs (observed, not mocked)."""
    seen: list[str] = []
    db = client.app[DB]
    engine = db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    db.observers.append(seen.append)  # the direct reads (bff.db.engine.Database.fetch)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        db.observers.remove(seen.append)


@contextlib.contextmanager
def json_log_lines(logger: str) -> Iterator[list[dict[str, Any]]]:
    """The logger's records as the JSON lines bff writes, formatted as they are logged
    (so the request id and trace id of the request being served are in them)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines() if line)


async def two_instances(
    aiohttp_client: Callable[..., Any], settings: Settings, clock: ManualClock, base_dir: Path
) -> tuple[TestClient, TestClient]:
    """Two app instances (process-equivalents) on the same database and gate."""
    first = await aiohttp_client(create_app(settings, clock=clock, base_dir=base_dir))
    second = await aiohttp_client(create_app(settings, clock=clock, base_dir=base_dir))
    return first, second


# --- paths and ids ---------------------------------------------------------------------------
def shop_url(path: str, shop: str = "s1") -> str:
    return f"/api/v1/shops/{shop}{path}"


def template_url(template_id: int, suffix: str = "", shop: str = "s1") -> str:
    return shop_url(f"/admin/coupon-templates/{template_id}{suffix}", shop)


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex


def when(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


# --- replies ---------------------------------------------------------------------------------
async def field_error(response: Any, field: str) -> dict[str, Any]:
    """Assert a 400 VALIDATION_FAILED whose details name ``field``; return the details."""
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    details = body["error"]["details"]
    assert field in details, body
    return details


# --- claims and the wallet -------------------------------------------------------------------
async def claim(
    client: TestClient,
    headers: dict[str, str],
    template_id: int,
    request_id: str | None = None,
    *,
    shop: str = "s1",
    **extra: Any,
) -> Any:
    """POST a widget claim; a fresh request_id unless one is given."""
    body = {"template_id": template_id, "request_id": request_id or new_request_id(), **extra}
    return await client.post(shop_url("/coupons/claim", shop), json=body, headers=headers)


async def claim_ok(
    client: TestClient, headers: dict[str, str], template_id: int, **kwargs: Any
) -> dict[str, Any]:
    """Claim and assert 201; return the coupon."""
    body = await expect(await claim(client, headers, template_id, **kwargs), HTTPStatus.CREATED)
    return body["coupon"]


async def wallet(
    client: TestClient, headers: dict[str, str], status: str | None = None, shop: str = "s1"
) -> list[dict[str, Any]]:
    """GET /me/coupons (up to 100, of ``status`` if given) and assert 200; return the items."""
    params = {"limit": "100"} if status is None else {"limit": "100", "status": status}
    body = await expect(
        await client.get(shop_url("/me/coupons", shop), params=params, headers=headers),
        HTTPStatus.OK,
    )
    return body["items"]


# --- merchant admin --------------------------------------------------------------------------
async def create_template(
    client: TestClient, clock: Any, headers: dict[str, str], shop: str = "s1", **overrides: Any
) -> dict[str, Any]:
    """Create a template through ``client`` (for apps built with other settings)."""
    response = await client.post(
        shop_url("/admin/coupon-templates", shop),
        json=template_body(clock, **overrides),
        headers=headers,
    )
    return await expect(response, HTTPStatus.CREATED)


async def get_template(
    client: TestClient, merchant: dict[str, str], template_id: int
) -> dict[str, Any]:
    return await expect(
        await client.get(template_url(template_id), headers=merchant), HTTPStatus.OK
    )


async def set_status(
    client: TestClient, merchant: dict[str, str], template_id: int, status: str
) -> None:
    response = await client.patch(
        template_url(template_id), json={"status": status}, headers=merchant
    )
    await expect(response, HTTPStatus.OK)


async def enrol(client: TestClient, merchant: dict[str, str], user_id: str, level: int) -> None:
    response = await client.put(
        shop_url(f"/admin/members/{user_id}"), json={"level": level}, headers=merchant
    )
    await expect(response, HTTPStatus.OK)


async def put_product(
    client: TestClient,
    merchant: dict[str, str],
    product_id: str,
    list_price: int,
    *,
    shop: str = "s1",
    **fields: Any,
) -> dict[str, Any]:
    """PUT a product titled ``商品 {product_id}`` unless ``fields`` say otherwise; assert 200."""
    body = {"title": f"商品 {product_id}", "list_price": list_price, **fields}
    response = await client.put(
        shop_url(f"/admin/products/{product_id}", shop), json=body, headers=merchant
    )
    return await expect(response, HTTPStatus.OK)


async def grant_ok(
    client: TestClient, merchant: dict[str, str], template_id: int, user_ids: list[str]
) -> list[dict[str, Any]]:
    """Grant ``template_id`` to ``user_ids`` and assert every user got one; return ``granted``."""
    response = await client.post(
        template_url(template_id, "/grants"),
        json={"user_ids": user_ids, "request_id": new_request_id()},
        headers=merchant,
    )
    body = await expect(response, HTTPStatus.CREATED)
    assert body["failed"] == [], body
    return body["granted"]


# --- the order system (role service) ---------------------------------------------------------
def items(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    """``items(("p1", 2))`` -> ``[{"product_id": "p1", "quantity": 2}]``."""
    return [{"product_id": product_id, "quantity": quantity} for product_id, quantity in pairs]


async def redeem(
    client: TestClient,
    service: dict[str, str],
    order_id: str,
    user_id: str,
    lines: list[dict[str, Any]],
    coupon_ids: list[Any],
    *,
    shop: str = "s1",
    **extra: Any,
) -> Any:
    """POST /redemptions: lock an order's coupons."""
    body = {
        "order_id": order_id,
        "user_id": user_id,
        "items": lines,
        "coupon_ids": coupon_ids,
        **extra,
    }
    return await client.post(shop_url("/redemptions", shop), json=body, headers=service)


async def redeem_ok(
    client: TestClient,
    service: dict[str, str],
    order_id: str,
    user_id: str,
    lines: list[dict[str, Any]],
    coupon_ids: list[Any],
    **extra: Any,
) -> dict[str, Any]:
    """Lock and assert 201 (a first lock, not a replay); return the reply."""
    response = await redeem(client, service, order_id, user_id, lines, coupon_ids, **extra)
    body = await expect(response, HTTPStatus.CREATED)
    assert body["status"] == "locked" and "replayed" not in body, body
    return body


async def confirm_order(
    client: TestClient, service: dict[str, str], order_id: str, shop: str = "s1"
) -> Any:
    return await client.post(shop_url(f"/redemptions/{order_id}/confirm", shop), headers=service)


async def cancel_order(
    client: TestClient, service: dict[str, str], order_id: str, shop: str = "s1"
) -> Any:
    return await client.post(shop_url(f"/redemptions/{order_id}/cancel", shop), headers=service)


# --- the claim gate's and the holders filter's tests ------------------------------------------
# Long enough that no local cache runs out in the middle of a test on a slow machine.
STEADY = {"template_cache_seconds": 600.0, "sold_out_seconds": 600.0}


async def code_of(client: TestClient, headers: dict[str, str], template_id: int, **kw: Any) -> str:
    """A claim's outcome as one word: its error code, "201" or "201 replayed"."""
    response = await claim(client, headers, template_id, **kw)
    body = await response.json()
    if response.status == HTTPStatus.CREATED:
        return "201 replayed" if body.get("replayed") else "201"
    return str(body["error"]["code"])


async def sold_out_template(
    client: TestClient, clock: ManualClock, merchant: dict[str, str], auth: Any, **overrides: Any
) -> dict[str, Any]:
    """A template of stock 1 that ``first`` has already taken."""
    template = await create_template(
        client, clock, merchant, stock={"type": "limited", "total": 1}, **overrides
    )
    await claim_ok(client, auth("user", sub="first"), template["id"])
    return template
