"""Time the pure price engine: 5 coupons x 2 lines, a product page (30 x 1), 50 x 20,
and the bench's signed-in product page (bench/seed.py's 20 held and 10 claimable
templates on each of its 30 products).

python bench/pricing_engine.py
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seed import CLAIMABLE_TEMPLATES, HELD_TEMPLATES, PRODUCTS, product_id, template_body
from bff.pricing.engine import Candidate, Line, best_quote

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def case(coupons: int, lines: int, seed: int = 7) -> tuple[list[Line], list[Candidate]]:
    rng = random.Random(seed)
    order = [
        Line(
            f"p{i}",
            rng.randint(1, 3),
            rng.randint(1000, 30000),
            rng.choice([None, None, rng.randint(500, 999)]),
            rng.choice(["cups", "tea"]),
        )
        for i in range(lines)
    ]
    candidates = []
    for i in range(coupons):
        kind = rng.choice(["threshold", "threshold", "no_threshold", "discount"])
        if kind == "threshold":
            threshold = rng.randint(5000, 60000)
            benefit = {
                "type": kind,
                "amount_off": rng.randint(100, threshold // 5),
                "threshold": threshold,
            }
        elif kind == "no_threshold":
            benefit = {"type": kind, "amount_off": rng.randint(100, 2000)}
        else:
            benefit = {
                "type": kind,
                "rate_permille": rng.randint(700, 950),
                "max_off": rng.choice([None, 3000]),
            }
        scope = rng.choice(
            [
                {"type": "shop"},
                {"type": "categories", "categories": ["cups"]},
                {"type": "products", "product_ids": ["p0", "p1", "p2"]},
            ]
        )
        candidates.append(
            Candidate(
                key=f"c{i}",
                template_id=i,
                benefit=benefit,
                scope=scope,
                with_store_promotions=rng.random() > 0.1,
                with_other_coupons=rng.random() > 0.5,
                needs_claim=rng.random() > 0.7,
                coupon_id=i,
                expires_at=NOW + timedelta(days=rng.randint(1, 30)),
            )
        )
    return order, candidates


def seeded_pages() -> list[tuple[list[Line], list[Candidate]]]:
    """Each product page of the bench's shop as a holder sees it (bench/seed.py)."""
    rng = random.Random(42)  # seed_shop's products, drawn in its order
    candidates = []
    for n in range(HELD_TEMPLATES + CLAIMABLE_TEMPLATES):
        body = template_body(n)
        held = n < HELD_TEMPLATES
        candidates.append(
            Candidate(
                key=f"c:{n}" if held else f"t:{n}",
                template_id=n + 1,
                benefit=body["benefit"],
                scope=body["scope"],
                with_store_promotions=body["stacking"]["with_store_promotions"],
                with_other_coupons=body["stacking"]["with_other_coupons"],
                needs_claim=not held,
                coupon_id=n if held else None,
                expires_at=NOW + timedelta(days=7),
            )
        )
    pages = []
    for n in range(1, PRODUCTS + 1):
        list_price = rng.randrange(9900, 59900, 100)
        promo = list_price - 1000 if n % 2 else None
        line = Line(product_id(n), 1, list_price, promo, ("cups", "tea", "snacks")[n % 3])
        pages.append(([line], candidates))
    return pages


def seeded_checkout() -> tuple[list[Line], list[Candidate]]:
    """bench/price_cpu.py's and the bench's checkout: products 1, 2 and 4 in quantities
    1, 2 and 4, priced with a holder's 20 held coupons."""
    pages = seeded_pages()
    lines = [replace(pages[n - 1][0][0], quantity=n) for n in (1, 2, 4)]
    return lines, [c for c in pages[0][1] if not c.needs_claim]


def measure(cases: list[tuple[list[Line], list[Candidate]]]) -> float:
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < 1.0:
        order, candidates = cases[runs % len(cases)]
        best_quote(order, candidates)
        runs += 1
    return (time.perf_counter() - started) / runs


def main() -> None:
    print(f"{'case':<22}{'per quote':>12}")
    for coupons, lines in ((5, 2), (30, 1), (50, 20)):
        seconds = measure([case(coupons, lines)])
        print(f"{f'{coupons} x {lines}':<22}{seconds * 1e6:>9.0f} us")
    seconds = measure(seeded_pages())
    print(f"{'bench product page':<22}{seconds * 1e6:>9.0f} us")
    seconds = measure([seeded_checkout()])
    print(f"{'bench checkout':<22}{seconds * 1e6:>9.0f} us")


if __name__ == "__main__":
    main()
