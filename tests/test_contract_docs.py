"""The contract in the repository (docs/api.md, docs/domain.md) kept true to the code.

docs/api.md lists every route and every event type in prose, beside the generated OpenAPI
document; these checks fail when a route, an event type or an error code is added or
removed without the page, and when a cited section anchor no longer exists. No server,
database or Redis: they read the endpoint registry and the files.
"""

from __future__ import annotations

import re
from pathlib import Path

from bff.events.outbox import EVENT_TYPES
from bff.openapi import ERROR_CODES
from handlers import all_endpoints

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api.md"
DOMAIN = ROOT / "docs" / "domain.md"
SHOP = "/api/v1/shops/{shop_id}"
# The route tables' sections and the prefix their paths are written after.
PREFIXES = {"System": "", "Shopper": SHOP, "Merchant": SHOP + "/admin", "Order system": SHOP}
METHOD_AND_PATH = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) ([^`]+)`")


def _sections(text: str) -> dict[str, str]:
    """Second-level heading -> its text (up to the next second-level heading)."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _table_first_cells(text: str) -> list[str]:
    return [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", path.read_text(), flags=re.M)}


def test_api_md_lists_every_registered_route_and_no_other():
    sections = _sections(API.read_text())
    documented = set()
    for section, prefix in PREFIXES.items():
        for cell in _table_first_cells(sections[section]):
            for method, path in METHOD_AND_PATH.findall(cell):
                documented.add((method, prefix + path))
    registered = {(e.method, e.openapi_path) for e in all_endpoints()}
    assert sorted(registered - documented) == [], "routes missing from docs/api.md"
    assert sorted(documented - registered) == [], "docs/api.md lists routes the code lacks"


def test_api_md_lists_every_event_type_once():
    events = _sections(API.read_text())["Events"]
    table = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", events, flags=re.M)
    assert sorted(table) == sorted(EVENT_TYPES)
    assert len(table) == len(set(table))


def test_the_event_types_are_listed_in_api_md_alone():
    """One copy of the list (issue 20 asks for it in api.md): EVENTS.md links to it."""
    events_md = (ROOT / "docs" / "EVENTS.md").read_text()
    assert "api.md#events" in events_md
    assert not re.search(r"^\| `coupon\.claimed` \|", events_md, flags=re.M)


def test_api_md_gives_every_error_code_its_status():
    sections = _sections(API.read_text())
    rows = {}
    for line in sections["Error codes"].splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 2 and cells[0][:1].isdigit():
            for code in re.findall(r"`([A-Z_]+)`", cells[1]):
                rows[code] = cells[0]
    for code, (status, _message, _details) in ERROR_CODES.items():
        assert code in rows, f"{code} missing from docs/api.md's error codes"
        assert str(status.value) in rows[code], f"{code}: {rows[code]} != {status.value}"


def test_every_cited_section_of_the_contract_exists():
    anchors = {"api.md": _anchors(API), "domain.md": _anchors(DOMAIN)}
    cited = re.compile(r"(?<![A-Za-z])(api|domain)\.md#([a-z0-9\-_]+)")
    missing = []
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("bff", "widgets", "handlers", "config", "tests", "examples"):
        files += sorted((ROOT / folder).rglob("*.py"))
    for path in files:
        for name, anchor in cited.findall(path.read_text()):
            if anchor not in anchors[f"{name}.md"]:
                missing.append(f"{path.relative_to(ROOT)}: {name}.md#{anchor}")
    assert missing == []
