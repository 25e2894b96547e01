#!/usr/bin/env python3
"""The README's flows, run for real against a coupon BFF through its HTTP API alone.

    python examples/flows.py --base http://127.0.0.1:8080

Creates everything it uses in one shop (``--shop``, default ``s1``): templates (the gift
template too), codes, products, a new-member and a member gift pack, points offers, a live
room and an order; reads every id from the replies; puts every date relative to now. Each
request is printed as the curl command that does the same, then its status and JSON reply,
so the output is a transcript you can paste into a shell. Any unexpected status stops the
run with exit code 1 (2 for bad arguments or tokens that cannot be minted).

Tokens come from ``--merchant-token``/``--shopper-token``/``--service-token`` or the
``MERCHANT``/``SHOPPER``/``SERVICE`` variables; missing ones are minted with
``python run.py token`` (``--mint-command`` for another, e.g. ``coupon-bff token``), run
in the current directory: start the server from the same directory, or with the same
``BFF_JWT_SECRET``, so it accepts them. Every shop starts empty: on a database that
already ran the flows, pass another ``--shop``.

Only the standard library: copy the file anywhere (away from the repository, give the
tokens or ``--mint-command``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
API = "/api/v1"
# Shell lines wrap before this many characters, as in the README.
WIDTH = 92
# Whom minted tokens are for: the shopper who does everything, the merchant, the order system.
SHOPPER_ID = "u1"
MERCHANT_ID = "m1"
SERVICE_ID = "orders"
CODES = ("SMS-0001", "SMS-0002")
TEMPLATE_DEFAULTS = {
    "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
    "claim_page": "pages/index/index",
    "redeem_page": "pages/coupon/use",
}


class FlowError(Exception):
    """A step answered other than expected (or not at all): the run stops, exit 1."""


class Dates:
    """The times the flows use, relative to now, and the shell variables they print as."""

    def __init__(self, now: datetime) -> None:
        now = now.astimezone(UTC).replace(microsecond=0)
        # name -> (instant, the GNU date expression that makes it in a shell)
        self.values: dict[str, tuple[datetime, str]] = {
            "START": (now - timedelta(hours=1), "-1 hour"),
            "END": (now + timedelta(days=30), "+30 days"),
            "LIVE_END": (now + timedelta(hours=2), "+2 hours"),
            "NEXT_LIVE": (now + timedelta(days=1), "+1 day"),
            "NEXT_LIVE_END": (now + timedelta(days=1, hours=3), "+1 day 3 hours"),
        }

    def __getitem__(self, name: str) -> str:
        return iso(self.values[name][0])

    def shell_lines(self) -> list[str]:
        return [
            f"{name}={iso(instant)}  # $(date -u -d '{expression}' +%FT%TZ)"
            for name, (instant, expression) in self.values.items()
        ]

    def as_shell(self, text: str) -> str:
        """Each date inside a single-quoted JSON body becomes its variable: '"$START"'."""
        for name in self.values:
            text = text.replace(f'"{self[name]}"', f'"\'"${name}"\'"')
        return text


def iso(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class Client:
    """One shop's API over urllib; prints each call as curl, then its reply."""

    def __init__(self, base: str, shop: str, tokens: dict[str, str], dates: Dates) -> None:
        self.base = base.rstrip("/")
        self.shop = shop
        self.tokens = tokens
        self.dates = dates
        # The shopper's user id, for the merchant's and the order system's calls.
        self.shopper = token_subject(tokens["SHOPPER"])

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        upload: tuple[str, list[str]] | None = None,
        expect: HTTPStatus = HTTPStatus.OK,
        code: str | None = None,
    ) -> Any:
        """``path`` is under the shop unless it starts with /api. ``token`` names a token
        (MERCHANT, SHOPPER, SERVICE); ``upload`` is (file name, lines) sent as multipart
        ``file``. The reply must have status ``expect`` (and error code ``code``)."""
        url_path = path if path.startswith(API) else f"{API}/shops/{self.shop}{path}"
        headers = {"Accept": "application/json"}
        data = None
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        if upload is not None:
            name, lines = upload
            print(f"printf '%s\\n' {shlex.join(lines)} > {name}")
            data, headers["Content-Type"] = multipart("file", name, lines)
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        print(self.curl(method, url_path, token, body, upload))
        request = urllib.request.Request(
            self.base + url_path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            raise FlowError(f"{method} {self.base}{url_path}: {error}") from error
        try:
            reply = json.loads(raw) if raw else None
        except ValueError as error:
            print(f"# -> {status} {raw[:200]!r}")
            raise FlowError(f"{method} {url_path} answered {status} without JSON") from error
        shown = "" if reply is None else " " + json.dumps(reply, ensure_ascii=False)
        print(f"# -> {status}{shown}\n")
        got = reply.get("error", {}).get("code") if isinstance(reply, dict) else None
        if status != expect or (code is not None and got != code):
            wanted = f"{int(expect)}" + (f" {code}" if code else "")
            # The request ids are fixed, so a shop that already ran the flows refuses them.
            rerun = "; this shop already ran the flows: pass another --shop" * (
                got == "IDEMPOTENCY_CONFLICT" and code != got
            )
            raise FlowError(f"{method} {url_path} answered {status}, expected {wanted}{rerun}")
        return reply

    def create_template(self, name: str, **fields: Any) -> Any:
        """The merchant creates :func:`template`'s body (dates from now); the reply."""
        body = template(name, self.dates, **fields)
        path = "/admin/coupon-templates"
        return self.call("POST", path, token="MERCHANT", body=body, expect=HTTPStatus.CREATED)

    def curl(
        self,
        method: str,
        url_path: str,
        token: str | None,
        body: Any,
        upload: tuple[str, list[str]] | None,
    ) -> str:
        words = ["curl -s" + ("" if method == "GET" else f" -X{method}"), f'"$BASE{url_path}"']
        if token is not None:
            words.append(f'-H "Authorization: Bearer ${token}"')
        if upload is not None:
            words.append(f"-F file=@{upload[0]}")
        elif body is not None:
            words.append("--json " + self.dates.as_shell(quote(json_text(body))))
        return wrap(words)


def token_subject(token: str) -> str:
    """A JWT's ``sub``, read without checking it (the server does that)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, KeyError, TypeError, ValueError) as error:
        raise FlowError(f"the shopper token is not a JWT with a sub: {error}") from error


def json_text(body: Any) -> str:
    """Compact JSON when it fits a line; else one top-level key per line, and a long list
    one item per line."""
    compact = json.dumps(body, ensure_ascii=False)
    if len(compact) <= 80 or not isinstance(body, dict):
        return compact
    fields = [f"    {json.dumps(key)}: {json_value(value)}" for key, value in body.items()]
    return "{\n" + ",\n".join(fields) + "\n  }"


def json_value(value: Any) -> str:
    compact = json.dumps(value, ensure_ascii=False)
    if len(compact) <= 72 or not isinstance(value, list):
        return compact
    items = [f"      {json.dumps(item, ensure_ascii=False)}" for item in value]
    return "[\n" + ",\n".join(items) + "\n    ]"


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def wrap(words: list[str]) -> str:
    """Join shell words, breaking with a backslash before a word that would pass WIDTH."""
    lines = [words[0]]
    for word in words[1:]:
        last = lines[-1].rsplit("\n", 1)[-1]
        if len(last) + 1 + len(word.split("\n", 1)[0]) > WIDTH:
            lines[-1] += " \\"
            lines.append("  " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)


def multipart(field: str, filename: str, lines: list[str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    content = "".join(line + "\n" for line in lines)
    body = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        f"{content}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


def template(name: str, dates: Dates, **fields: Any) -> dict[str, Any]:
    """A template body in the README's field order: claimable from an hour ago for
    30 days, valid 7 days from the claim."""
    body: dict[str, Any] = {"name": name}
    order = ("description", "benefit", "scope", "claim_start", "claim_end", "validity")
    defaults = {"claim_start": dates["START"], "claim_end": dates["END"], **TEMPLATE_DEFAULTS}
    for key in order:
        if key in fields or key in defaults:
            body[key] = fields.pop(key, defaults.get(key))
    body.update(fields)
    body.setdefault("claim_page", TEMPLATE_DEFAULTS["claim_page"])
    body.setdefault("redeem_page", TEMPLATE_DEFAULTS["redeem_page"])
    return body


# --- the flows, in the README's order ------------------------------------------------------------
def merchant_templates(api: Client) -> dict[str, int]:
    """The merchant's templates, products and their read-backs; the ids by role."""
    ids: dict[str, int] = {}
    store = api.create_template(
        "满299减50",
        description="全店通用",
        benefit={"type": "threshold", "amount_off": 5000, "threshold": 29900},
        stock={"type": "limited", "total": 1000},
        claim_methods=["widget"],
    )
    ids["store"] = store["id"]
    api.call("GET", f"/admin/coupon-templates/{store['id']}", token="MERCHANT")
    api.call("GET", "/admin/coupon-templates?limit=20", token="MERCHANT")
    api.call(
        "PATCH",
        f"/admin/coupon-templates/{store['id']}",
        token="MERCHANT",
        body={"stock": {"type": "limited", "total": 1500}},
    )
    ids["auto"] = api.create_template(
        "保温杯进店立减20",
        benefit={"type": "no_threshold", "amount_off": 2000},
        scope={"type": "products", "product_ids": ["cup-1"]},
        stock={"type": "limited", "total": 1000},
        claim_methods=["auto"],
        stacking={"with_store_promotions": True, "with_other_coupons": True},
    )["id"]
    ids["sms"] = api.create_template(
        "短信券 满99减10",
        benefit={"type": "threshold", "amount_off": 1000, "threshold": 9900},
        codes={"type": "imported"},
        claim_methods=["code"],
    )["id"]
    ids["partner"] = api.create_template(
        "合作渠道券 无门槛5元",
        benefit={"type": "no_threshold", "amount_off": 500},
        codes={"type": "pregenerated", "count": 100},
        claim_methods=["code"],
    )["id"]
    api.call(
        "PUT",
        "/admin/products/cup-1",
        token="MERCHANT",
        body={
            "title": "保温杯",
            "list_price": 39900,
            "promo_price": 36900,
            "category": "cups",
            "auto_claim_template_ids": [ids["auto"]],
        },
    )
    api.call(
        "PUT",
        "/admin/products/tea-1",
        token="MERCHANT",
        body={"title": "龙井礼盒", "list_price": 29900, "category": "tea"},
    )
    api.call(
        "PUT",
        "/admin/products/bag-1",
        token="MERCHANT",
        body={"title": "帆布袋", "list_price": 4900, "category": "gifts"},
    )
    return ids


def shopper_claims(api: Client, ids: dict[str, int]) -> dict[str, int]:
    """Widget, claim (and its replay), wallet, auto-claim; the shopper's coupon ids."""
    api.call("GET", "/claim-widget?product_id=cup-1", token="SHOPPER")
    claim = {"template_id": ids["store"], "request_id": "claim-7f3a", "device": {"id": "d-123"}}
    coupon = api.call(
        "POST", "/coupons/claim", token="SHOPPER", body=claim, expect=HTTPStatus.CREATED
    )["coupon"]
    replay = api.call(
        "POST", "/coupons/claim", token="SHOPPER", body=claim, expect=HTTPStatus.CREATED
    )
    if not replay.get("replayed") or replay["coupon"]["coupon_id"] != coupon["coupon_id"]:
        raise FlowError("the same claim again did not replay the first coupon")
    again = {**claim, "request_id": "claim-8b4c"}
    api.call(
        "POST",
        "/coupons/claim",
        token="SHOPPER",
        body=again,
        expect=HTTPStatus.CONFLICT,
        code="LIMIT_REACHED",
    )
    api.call("GET", "/me/coupons?status=usable&limit=20", token="SHOPPER")
    auto = api.call(
        "POST",
        "/products/cup-1/auto-claim",
        token="SHOPPER",
        body={"request_id": "open-cup-1-7f3a"},
    )
    if [c["template_id"] for c in auto["claimed"]] != [ids["auto"]]:
        raise FlowError("auto-claim did not issue the product's auto-claim coupon")
    return {"store": coupon["coupon_id"], "auto": auto["claimed"][0]["coupon_id"]}


def prices(api: Client) -> None:
    """券后价 on the product page (anonymous and signed in) and on a list page."""
    api.call("GET", "/products/cup-1?quantity=1")
    api.call("GET", "/products/cup-1?quantity=1", token="SHOPPER")
    api.call(
        "POST",
        "/prices",
        body={"items": [{"product_id": "cup-1", "quantity": 1}, {"product_id": "tea-1"}]},
    )


def codes_and_grants(api: Client, ids: dict[str, int]) -> None:
    """Imported and generated codes, a claim by code, grants and a revoke."""
    api.call(
        "POST",
        f"/admin/coupon-templates/{ids['sms']}/codes/import",
        token="MERCHANT",
        upload=("codes.txt", list(CODES)),
        expect=HTTPStatus.CREATED,
    )
    api.call(
        "POST",
        f"/admin/coupon-templates/{ids['partner']}/codes",
        token="MERCHANT",
        body={"count": 50},
        expect=HTTPStatus.CREATED,
    )
    api.call(
        "POST",
        "/coupons/claim-by-code",
        token="SHOPPER",
        body={"code": CODES[0], "request_id": "code-1"},
        expect=HTTPStatus.CREATED,
    )
    grants = api.call(
        "POST",
        f"/admin/coupon-templates/{ids['store']}/grants",
        token="MERCHANT",
        body={"user_ids": ["u2", "u3"], "request_id": "grant-1"},
        expect=HTTPStatus.CREATED,
    )
    revoked = grants["granted"][0]["coupon_id"]
    api.call("POST", f"/admin/coupons/{revoked}/revoke", token="MERCHANT")


def member_center(api: Client, ids: dict[str, int]) -> None:
    """Gift packs with a gift, join (the popup), the member center, pack claims, a rejoin."""
    d = api.dates

    def pack_coupon(name: str, benefit: dict[str, Any]) -> int:
        created = api.create_template(
            name,
            benefit=benefit,
            stock={"type": "limited", "total": 1000},
            claim_methods=["gift_pack"],
        )
        return int(created["id"])

    gift = api.create_template(
        "赠品：帆布袋",
        description="新会员礼包赠品，1分钱带走",
        benefit={"type": "gift", "product_id": "bag-1"},
        stock={"type": "limited", "total": 500},
        claim_methods=["gift_pack"],
    )["id"]
    welcome = [
        pack_coupon(
            "礼包券 满199减30", {"type": "threshold", "amount_off": 3000, "threshold": 19900}
        ),
        pack_coupon("礼包券 无门槛5元", {"type": "no_threshold", "amount_off": 500}),
    ]
    new_pack = api.call(
        "POST",
        "/admin/gift-packs",
        token="MERCHANT",
        expect=HTTPStatus.CREATED,
        body={
            "kind": "new_member",
            "name": "新会员礼包",
            "coupon_template_ids": welcome,
            "gift": {"template_id": gift, "quantity": 200},
            "starts_at": d["START"],
            "ends_at": d["END"],
        },
    )
    member_coupon = pack_coupon(
        "会员礼包 满399减60", {"type": "threshold", "amount_off": 6000, "threshold": 39900}
    )
    member_pack = api.call(
        "POST",
        "/admin/gift-packs",
        token="MERCHANT",
        expect=HTTPStatus.CREATED,
        body={
            "kind": "member",
            "name": "会员礼包",
            "min_level": 2,
            "coupon_template_ids": [member_coupon],
            "starts_at": d["START"],
            "ends_at": d["END"],
        },
    )
    joined = api.call("POST", "/membership", token="SHOPPER", body={}, expect=HTTPStatus.CREATED)
    if not joined["new_member"] or (joined["popup"] or {}).get("id") != new_pack["id"]:
        raise FlowError("joining did not pop up the new-member pack")
    api.call("GET", "/member-center", token="SHOPPER")
    claimed = api.call(
        "POST",
        f"/gift-packs/{new_pack['id']}/claim",
        token="SHOPPER",
        body={"request_id": "pack-1"},
        expect=HTTPStatus.CREATED,
    )
    if claimed["gift"] is None or claimed["gift"]["template_id"] != gift:
        raise FlowError("the new-member pack came without its gift")
    api.call("PUT", f"/admin/members/{api.shopper}", token="MERCHANT", body={"level": 2})
    center = api.call("GET", "/member-center", token="SHOPPER")
    if (center["popup"] or {}).get("id") != member_pack["id"]:
        raise FlowError("the member center did not pop up the member pack")
    api.call(
        "POST",
        f"/gift-packs/{member_pack['id']}/claim",
        token="SHOPPER",
        body={"request_id": "pack-2"},
        expect=HTTPStatus.CREATED,
    )
    api.call("DELETE", "/membership", token="SHOPPER", expect=HTTPStatus.NO_CONTENT)
    rejoined = api.call("POST", "/membership", token="SHOPPER", body={}, expect=HTTPStatus.CREATED)
    if rejoined["new_member"] or rejoined["popup"] is not None:
        raise FlowError("a rejoin was treated as a new member")


def points(api: Client) -> None:
    """The points policy at offer creation, points for the member, an exchange."""
    candidates = []
    for amount in (5000, 5500):
        created = api.create_template(
            f"积分券 满299减{amount // 100}",
            benefit={"type": "threshold", "amount_off": amount, "threshold": 29900},
            validity={"type": "relative", "effective_after_days": 0, "valid_days": 30},
            stock={"type": "limited", "total": 500},
            claim_methods=["points"],
            per_user_limit=2,
        )
        candidates.append(created["id"])
    weak, strong = candidates
    api.call(
        "POST",
        "/admin/exchange-offers",
        token="MERCHANT",
        body={"template_id": weak, "points_cost": 300},
        expect=HTTPStatus.BAD_REQUEST,
        code="POLICY_VIOLATION",
    )
    offer = api.call(
        "POST",
        "/admin/exchange-offers",
        token="MERCHANT",
        body={"template_id": strong, "points_cost": 300},
        expect=HTTPStatus.CREATED,
    )
    api.call(
        "POST",
        f"/admin/members/{api.shopper}/points",
        token="MERCHANT",
        body={"delta": 1000, "reason": "购物奖励", "ref": "order:o-0999", "request_id": "crm-001"},
    )
    api.call("GET", "/points-exchange", token="SHOPPER")
    exchanged = api.call(
        "POST",
        f"/points-exchange/{offer['id']}/redeem",
        token="SHOPPER",
        body={"request_id": "x-7f3a"},
        expect=HTTPStatus.CREATED,
    )
    if exchanged["balance"] != 700:
        raise FlowError("the exchange did not charge 300 of 1000 points")
    api.call("GET", "/me/points?limit=20", token="SHOPPER")


def live_room(api: Client) -> None:
    """Exclusive prices for a room: cup-1 live now, tea-1 in tomorrow's stream."""
    d = api.dates
    api.call(
        "PUT",
        "/admin/live-rooms/room-9/prices",
        token="MERCHANT",
        body={
            "items": [
                {
                    "product_id": "cup-1",
                    "exclusive_price": 29900,
                    "starts_at": d["START"],
                    "ends_at": d["LIVE_END"],
                },
                {
                    "product_id": "tea-1",
                    "exclusive_price": 19900,
                    "starts_at": d["NEXT_LIVE"],
                    "ends_at": d["NEXT_LIVE_END"],
                },
            ]
        },
    )
    room = api.call("GET", "/live-rooms/room-9/prices?product_ids=cup-1,tea-1")
    if [item["status"] for item in room["items"]] != ["live", "upcoming"]:
        raise FlowError("the live room's prices are not live and upcoming")
    api.call("GET", "/products/cup-1?live_room_id=room-9", token="SHOPPER")


def checkout_and_redemption(api: Client, ids: dict[str, int], coupons: dict[str, int]) -> None:
    """Checkout preview, then the order system: lock, replay, confirm, stats, cancel."""
    api.call(
        "POST",
        "/checkout/preview",
        token="SHOPPER",
        body={"items": [{"product_id": "cup-1", "quantity": 2}]},
    )
    order = {
        "order_id": "o-1001",
        "user_id": api.shopper,
        "items": [{"product_id": "cup-1", "quantity": 1}],
        "coupon_ids": [coupons["store"]],
    }
    api.call("POST", "/redemptions", token="SERVICE", body=order, expect=HTTPStatus.CREATED)
    replay = api.call(
        "POST", "/redemptions", token="SERVICE", body=order, expect=HTTPStatus.CREATED
    )
    if not replay.get("replayed"):
        raise FlowError("the same order again did not replay")
    api.call(
        "POST",
        "/redemptions",
        token="SERVICE",
        body={**order, "items": [{"product_id": "cup-1", "quantity": 2}]},
        expect=HTTPStatus.CONFLICT,
        code="IDEMPOTENCY_CONFLICT",
    )
    api.call("POST", "/redemptions/o-1001/confirm", token="SERVICE")
    api.call("GET", f"/admin/stats/coupon-templates/{ids['store']}", token="MERCHANT")
    cancelled = api.call("POST", "/redemptions/o-1001/cancel", token="SERVICE")
    if cancelled["returned"] != [coupons["store"]]:
        raise FlowError("cancelling the paid order did not return its coupon")


def run(api: Client) -> None:
    ids = merchant_templates(api)
    coupons = shopper_claims(api, ids)
    prices(api)
    codes_and_grants(api, ids)
    member_center(api, ids)
    points(api)
    live_room(api)
    checkout_and_redemption(api, ids, coupons)


def wait_until_ready(base: str, seconds: float) -> None:
    """Poll ``/readyz`` until it answers 200, for at most ``seconds`` (not printed)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(base.rstrip("/") + "/readyz", timeout=2) as response:
                if response.status == HTTPStatus.OK:
                    return
        except (OSError, ValueError) as error:
            problem = str(error)
        else:
            problem = f"status {response.status}"
        if time.monotonic() >= deadline:
            raise FlowError(f"{base}/readyz did not answer 200 within {seconds:.0f} s: {problem}")
        time.sleep(0.2)


# --- tokens and the command line -----------------------------------------------------------------
def mint_tokens(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """The three tokens, and the shell lines that say where each came from."""
    wanted = {
        "MERCHANT": (
            args.merchant_token,
            ["--role", "merchant", "--shop", args.shop, "--sub", MERCHANT_ID],
        ),
        "SHOPPER": (args.shopper_token, ["--role", "user", "--sub", SHOPPER_ID]),
        "SERVICE": (
            args.service_token,
            ["--role", "service", "--shop", args.shop, "--sub", SERVICE_ID],
        ),
    }
    if args.mint_command:
        command, shown = shlex.split(args.mint_command), args.mint_command
    else:
        command, shown = [sys.executable, str(REPO / "run.py"), "token"], "python run.py token"
    tokens: dict[str, str] = {}
    lines: list[str] = []
    for name, (given, mint_args) in wanted.items():
        given = given or os.environ.get(name)
        if given:
            tokens[name] = given
            lines.append(f"# {name}: given")
            continue
        try:
            result = subprocess.run(
                command + mint_args, capture_output=True, text=True, timeout=60, check=False
            )
        except OSError as error:
            raise SystemExit(f"cannot mint the {name} token with {shown}: {error}") from error
        if result.returncode != 0 or not result.stdout.strip():
            raise SystemExit(f"cannot mint the {name} token with {shown}: {result.stderr.strip()}")
        tokens[name] = result.stdout.strip()
        lines.append(f"{name}=$({shown} {shlex.join(mint_args)})")
    return tokens, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8080", help="the server's base URL")
    parser.add_argument("--shop", default="s1", help="the shop to create everything in (empty)")
    parser.add_argument("--merchant-token", help="a merchant token for the shop (or MERCHANT)")
    parser.add_argument("--shopper-token", help=f"a user token for {SHOPPER_ID} (or SHOPPER)")
    parser.add_argument("--service-token", help="a service token for the shop (or SERVICE)")
    parser.add_argument(
        "--mint-command",
        help="mints missing tokens, given --role/--shop/--sub (default: python run.py token)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=15.0,
        help="seconds to wait for /readyz first, for a server just started (default 15)",
    )
    args = parser.parse_args(argv)
    try:
        tokens, token_lines = mint_tokens(args)
    except SystemExit as stop:
        print(stop, file=sys.stderr)
        return 2
    try:
        wait_until_ready(args.base, args.wait)
    except FlowError as error:
        print(f"flows failed: {error}", file=sys.stderr)
        return 1
    dates = Dates(datetime.now(UTC))
    print(f"BASE={args.base.rstrip('/')}")
    print("\n".join(token_lines))
    print("\n".join(dates.shell_lines()) + "\n")
    try:
        run(Client(args.base, args.shop, tokens, dates))
    except FlowError as error:
        print(f"flows failed: {error}", file=sys.stderr)
        return 1
    print("# all flows done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
