"""The demo storefront page (``/demo``): static files shipped in the package, and its settings.

The page is static, so it costs the API nothing: the files are read once, and
served with an ETag (a revalidation is a 304). The page itself is revalidated
on each load; its script and style sheet are linked with a content hash
(``?v=``), so a browser keeps those for good and a new release changes the link.
It is always served, like ``/docs``: it only calls the public API, and signing
in a fresh shopper needs the development identity provider, which ``run.py
--demo`` turns on and nothing turns on by default.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from importlib import resources

from aiohttp import web

from bff import jsonutil
from bff.demo.seed import AUTO_CLAIM_PRODUCT, DEMO_SHOP, LIVE_ROOM, PRODUCT_IDS, demo_codes
from bff.errors import not_found
from bff.identity import DevIdentityProvider
from bff.keys import IDENTITY, SETTINGS
from bff.routing import PUBLIC, Call, Routes

routes = Routes(prefix="", tag="demo")
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
VERSION_MARK = b"__VERSION__"
FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The page loads only from this server: the policy makes a stray CDN link fail loudly.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _read(name: str) -> bytes:
    return resources.files("bff").joinpath(f"static/demo/{name}").read_bytes()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


@cache
def assets() -> dict[str, StaticFile]:
    """The page's files, read once; the page links the others by their combined hash."""
    files = {name: _read(name) for name in ASSETS}
    version = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()[:12]
    out = {name: StaticFile(body, ASSETS[name], _etag(body)) for name, body in files.items()}
    page = _read("index.html").replace(VERSION_MARK, version.encode())
    out["index.html"] = StaticFile(page, "text/html", _etag(page))
    out["version"] = StaticFile(version.encode(), "text/plain", "")
    return out


def _reply(request: web.Request, file: StaticFile, cache_control: str) -> web.Response:
    headers = {
        "ETag": file.etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
    }
    if file.content_type == "text/html":
        headers["Content-Security-Policy"] = CSP
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=HTTPStatus.NOT_MODIFIED, headers=headers)
    response = web.Response(
        body=file.body, content_type=file.content_type, charset="utf-8", headers=headers
    )
    response.enable_compression()
    return response


@routes.get(
    "/demo",
    auth=PUBLIC,
    offline=True,
    media_types=("text/html",),
    also=(HTTPStatus.NOT_MODIFIED,),
)
async def demo_page(call: Call) -> web.Response:
    """The demo storefront: every widget against this API (see ``python run.py --demo``)."""
    return _reply(call.request, assets()["index.html"], REVALIDATE)


@routes.get("/demo/config.json", auth=PUBLIC, offline=True, also=(HTTPStatus.NOT_MODIFIED,))
async def demo_config(call: Call) -> web.Response:
    """What the demo page needs to know: the demo shop, its time zone and whether it may
    sign shoppers in."""
    body = jsonutil.dumps(
        {
            "shop_id": DEMO_SHOP,
            "product_ids": list(PRODUCT_IDS),
            "auto_claim_product": AUTO_CLAIM_PRODUCT,
            "live_room_id": LIVE_ROOM,
            "code_hint": demo_codes()[0],
            "dev_sign_in": _dev_sign_in(call),
            # The page shows times in the shop's zone, not the browser's.
            "shop_timezone": call.app[SETTINGS].shop.timezone,
        }
    )
    file = StaticFile(body, "application/json", _etag(body))
    return _reply(call.request, file, REVALIDATE)


def _dev_sign_in(call: Call) -> bool:
    """Whether ``dev:<user_id>`` codes are accepted (the development provider is on)."""
    return isinstance(call.app[IDENTITY], DevIdentityProvider)


@routes.get(
    "/demo/{asset:[a-z]+\\.(?:js|css)}",
    auth=PUBLIC,
    errors=(HTTPStatus.NOT_FOUND,),
    offline=True,
    media_types=tuple(ASSETS.values()),
    also=(HTTPStatus.NOT_MODIFIED,),
)
async def demo_asset(call: Call) -> web.Response:
    """The page's script and style sheet."""
    name = call.path("asset")
    if name not in ASSETS:
        raise not_found("file")
    file = assets()[name]
    current = call.request.query.get("v") == assets()["version"].body.decode()
    return _reply(call.request, file, FOREVER if current else REVALIDATE)
