"""The pure price engine (券后价 / 到手价): best coupons, stacking, apportionment. No I/O.

It follows DOMAIN.md "Post-coupon price" word for word; the same code prices product
pages, list pages, checkout and redemption, so statistics and returns credit each
coupon with what it took here.

* **Base price**: the store promotion price when the product has one, else the list
  price. The lines in the scope of a coupon with ``with_store_promotions=false`` are at
  list price in any combination holding it. Lines at a live-room exclusive price are in no
  coupon's scope.
* **Combinations**: one coupon alone, or coupons that all have
  ``with_other_coupons=true``, at most one per template and one ``discount``; fixed
  prices (``exchange``, ``gift``) each need a unit of their own. Every coupon needs a
  line in scope and its own threshold met on the eligible subtotal at the combination's
  base prices, before any coupon.
* **Order of application** (:func:`evaluate`):
  1. fixed prices, in template id order, each on one unit of its product (the first
     line of that product with a unit no fixed price took), down to its price;
  2. amount-offs, product- and category-scoped before shop-wide, each group in template
     id order; each split over its scope lines in proportion to their amounts (unit
     price x quantity at the base price), a share stopping at zero and the rest split
     again over the lines still above zero, in proportion to their amounts;
  3. the discount coupon, on what is left of its lines: its cents rounded down, capped
     by ``max_off``, split in proportion to what is left of each line.
  Every split is in whole cents by largest remainder (equal remainders: the earlier
  line), so each coupon's line shares sum exactly to its discount.
* **Best** (:func:`best_quote`): the lowest payable among the *minimal* combinations,
  those where dropping any one coupon (and pricing the rest again) raises the payable
  or leaves a combination that cannot be used (a threshold no longer met): no coupon is
  spent for nothing. Ties: fewer coupons still to claim, then the earliest expiry, then
  fewer coupons, then the lower sorted list of template ids; of one template's coupons
  the held one, then the one expiring first, then the lowest key stands for it.

Search and cost. Coupons of one template are interchangeable for the payable, so one
stands for each template (the one the last tie-break would pick). Coupons that do not
stack are each priced alone. The stacking templates that apply are searched by a
depth-first walk in the order of application that shares the work of common prefixes
(one coupon applied per node) and keeps each subset's payable, so that minimality is a
look-up per coupon (a subset it did not price is priced then). It tries each coupon
before going without it, and cuts a branch when even every coupon still to come could
not bring it down to the lowest payable found so far: the cut branches hold no
combination of the lowest payable, so the result is exact. Worst case O(2^s · n) for s
stacking templates and n lines; s is 0-3 on a real page (coupons do not stack by
default), and the cut keeps a wallet of many stacking coupons far below that. Rounding
makes the payable not quite monotone in the set of coupons (a cent can move between
lines), so the walk cuts only on bounds that hold whatever the rounding. A search stops
after ``NODE_BUDGET`` coupons applied (a cart where very many combinations tie at the
lowest price), keeping the best found: the one place the result is not provably the
best. Measured by ``bench/pricing_engine.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from typing import Any

FIXED_PRICE = ("exchange", "gift")
AMOUNT_OFF = ("threshold", "no_threshold")
GIFT_PRICE = 1  # a gift is bought for 1 cent
# Coupons applied at most in one search: a cart where many stacking coupons each bring
# the price to its lowest has as many equally cheap combinations to break the tie among.
NODE_BUDGET = 5_000
SMALL_WALK = 6  # up to this many stacking coupons, the walk is not cut

# Phases of application: fixed prices, narrow amount-offs, shop-wide amount-offs, discount.
_FIXED, _NARROW, _SHOP_WIDE, _DISCOUNT = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    quantity: int
    list_price: int
    promo_price: int | None = None
    category: str | None = None
    # A live-room exclusive price (直播专享价): the price, and no coupon applies.
    exclusive_price: int | None = None


@dataclass(slots=True)
class Candidate:
    """A coupon that could apply: one the user holds, or one they could claim now.

    Never changed once made (not frozen: a frozen dataclass's ``__init__`` costs twice
    as much, and a product page makes ten of these per request)."""

    key: str
    template_id: int
    benefit: dict[str, Any]
    scope: dict[str, Any]
    with_store_promotions: bool = True
    with_other_coupons: bool = False
    needs_claim: bool = False
    coupon_id: int | None = None
    expires_at: datetime | None = None
    # Derived once here rather than at every comparison of the search: the expiry as a
    # timestamp (inf for none), which of a template's coupons stands for it, and what
    # QuoteMemo's key holds of it besides its expiry.
    expiry: float = field(init=False, repr=False, compare=False)
    preference: tuple[bool, float, str] = field(init=False, repr=False, compare=False)
    shape: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expiry = self.expires_at.timestamp() if self.expires_at is not None else math.inf
        self.expiry = expiry
        # Held, then expiring first, then key.
        self.preference = (self.needs_claim, expiry, self.key)
        self.shape = (
            self.template_id,
            id(self.benefit),
            id(self.scope),
            self.with_store_promotions,
            self.with_other_coupons,
            self.needs_claim,
        )


@dataclass(frozen=True, slots=True)
class LineQuote:
    product_id: str
    quantity: int
    unit_price: int
    amount: int
    discount: int
    payable: int


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    candidate: Candidate
    discount: int
    # What this coupon took from each line of the quote, in line order (分摊).
    shares: tuple[int, ...] = ()


@dataclass(frozen=True)
class Quote:
    lines: tuple[LineQuote, ...]
    coupons: tuple[AppliedCoupon, ...]  # in the order of application
    total: int
    discount: int
    payable: int
    rank: tuple[Any, ...] = field(default=(), compare=False, repr=False)


class NotApplicable(Exception):
    """A combination that cannot be used (threshold not met, a coupon taking nothing)."""

    def __init__(self, candidate: Candidate, reason: str) -> None:
        super().__init__(reason)
        self.candidate = candidate
        self.reason = reason


# --- scope and splits --------------------------------------------------------------------
def in_scope(scope: dict[str, Any], line: Line) -> bool:
    if line.exclusive_price is not None:
        return False
    kind = scope["type"]
    if kind == "shop":
        return True
    if kind == "products":
        return line.product_id in scope["product_ids"]
    return line.category is not None and line.category in scope["categories"]


def scope_lines(candidate: Candidate, lines: Sequence[Line]) -> list[int]:
    """Indexes of the lines a coupon applies to (exchange and gift: their product only)."""
    benefit = candidate.benefit
    indexes = [i for i, line in enumerate(lines) if in_scope(candidate.scope, line)]
    if benefit["type"] in FIXED_PRICE:
        indexes = [i for i in indexes if lines[i].product_id == benefit["product_id"]]
    return indexes


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` cents over ``weights`` proportionally, largest remainder first
    (equal remainders: the earlier weight).

    Requires ``0 <= total <= sum(weights)``; then every share is at most its weight.
    """
    whole = sum(weights)
    if total == 0 or whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    if left:
        remainders = sorted(((total * w % whole, -i) for i, w in enumerate(weights)), reverse=True)
        for _, negative_index in remainders[:left]:
            shares[-negative_index] += 1
    return shares


def split_capped(
    off: int, indexes: Sequence[int], amounts: Sequence[int], remaining: list[int]
) -> list[int]:
    """An amount-off's split (step 2): over every line in scope in proportion to the
    lines' amounts, a share stopping at zero and the rest split again over the lines
    still above zero, in proportion to their amounts.

    Takes from ``remaining`` in place; returns the share of each of ``indexes``."""
    shares = [0] * len(indexes)
    active = list(range(len(indexes)))  # the first split is over every line in scope
    while off > 0 and active:
        parts = apportion(off, [amounts[indexes[k]] for k in active])
        still = []
        for k, part in zip(active, parts, strict=True):
            i = indexes[k]
            take = part if part < remaining[i] else remaining[i]
            remaining[i] -= take
            shares[k] += take
            off -= take
            if remaining[i] > 0:
                still.append(k)
        active = still
    return shares


# --- one combination ---------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class _Coupon:
    """A candidate prepared for one set of lines (never changed once made; not frozen,
    which would cost a third of a microsecond per field on each of the ~30 made for a
    product page)."""

    candidate: Candidate
    indexes: tuple[int, ...]
    phase: int
    threshold: int | None
    # with_store_promotions=false: the lines in its scope at list price (DOMAIN.md's
    # words: every line of the scope, also for a fixed price that takes one of them);
    # only those with a promotion price, the others cost the same either way.
    at_list: tuple[int, ...]

    @property
    def refuses(self) -> bool:
        """Whether holding it changes the base prices (the search tries both ways)."""
        return bool(self.at_list)

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.phase, self.candidate.template_id, self.candidate.key)


def _prepare(candidate: Candidate, lines: Sequence[Line]) -> _Coupon:
    kind = candidate.benefit["type"]
    if kind in FIXED_PRICE:
        phase = _FIXED
    elif kind in AMOUNT_OFF:
        phase = _SHOP_WIDE if candidate.scope["type"] == "shop" else _NARROW
    else:
        phase = _DISCOUNT
    return _Coupon(
        candidate,
        tuple(scope_lines(candidate, lines)),
        phase,
        candidate.benefit.get("threshold"),
        ()
        if candidate.with_store_promotions
        else tuple(
            i
            for i, line in enumerate(lines)
            if line.promo_price is not None
            and line.promo_price != line.list_price
            and in_scope(candidate.scope, line)
        ),
    )


class _Prices:
    """Unit prices and line amounts for one set of lines at list price (the lines of the
    combination's coupons that refuse store promotions)."""

    __slots__ = ("amounts", "units")

    def __init__(self, lines: Sequence[Line], at_list: frozenset[int]) -> None:
        units = []
        for i, line in enumerate(lines):
            if line.exclusive_price is not None:
                units.append(line.exclusive_price)
            elif line.promo_price is not None and i not in at_list:
                units.append(line.promo_price)
            else:
                units.append(line.list_price)
        self.units = units
        self.amounts = [unit * line.quantity for unit, line in zip(units, lines, strict=True)]

    def meets(self, coupon: _Coupon) -> bool:
        threshold = coupon.threshold
        return threshold is None or sum(self.amounts[i] for i in coupon.indexes) >= threshold


def _fixed_price(benefit: dict[str, Any]) -> int:
    """What one unit costs with a fixed-price coupon (an exchange's price, a gift's cent)."""
    return int(benefit["price"]) if benefit["type"] == "exchange" else GIFT_PRICE


def _discount_off(benefit: dict[str, Any], left: int) -> int:
    """A discount coupon's cents on ``left``: rounded down, capped by ``max_off``."""
    off = left * (1000 - benefit["rate_permille"]) // 1000
    max_off = benefit.get("max_off")
    return off if max_off is None or off <= max_off else max_off


def _apply(
    coupon: _Coupon,
    prices: _Prices,
    remaining: list[int],
    free_units: list[int],
) -> list[int] | None:
    """Apply one coupon in place; its share of each of its lines, or None when a fixed
    price finds no unit of its own."""
    benefit = coupon.candidate.benefit
    indexes = coupon.indexes
    if coupon.phase == _FIXED:
        for k, i in enumerate(indexes):
            if free_units[i] > 0:
                free_units[i] -= 1
                take = max(prices.units[i] - _fixed_price(benefit), 0)
                remaining[i] -= take  # a unit of its own: never more than the line has left
                shares = [0] * len(indexes)
                shares[k] = take
                return shares
        return None
    if coupon.phase == _DISCOUNT:
        left = [remaining[i] for i in indexes]
        shares = apportion(_discount_off(benefit, sum(left)), left)
        for i, share in zip(indexes, shares, strict=True):
            remaining[i] -= share
        return shares
    return split_capped(int(benefit["amount_off"]), indexes, prices.amounts, remaining)


def _at_list(coupons: Iterable[_Coupon]) -> frozenset[int]:
    return frozenset(i for c in coupons for i in c.at_list)


def _run(
    lines: Sequence[Line],
    coupons: Sequence[_Coupon],
    *,
    strict: bool,
    failed: list[_Coupon] | None = None,
) -> tuple[_Prices, list[int], list[tuple[_Coupon, list[int]]]] | None:
    """Apply exactly ``coupons``: the prices, what is left of each line and each coupon's
    shares in the order of application; None (NotApplicable when ``strict``) if one
    cannot apply: no line in scope, threshold not met, no unit of its own, or a coupon
    that takes nothing (none is ever spent for nothing). With ``failed``, a coupon that
    cannot apply is left out and added there instead."""
    prices = _Prices(lines, _at_list(coupons))
    todo = []
    for coupon in coupons:
        if coupon.indexes and prices.meets(coupon):
            todo.append(coupon)
        elif failed is not None:
            failed.append(coupon)
        elif not strict:
            return None
        else:
            reason = "no product in scope" if not coupon.indexes else "threshold not met"
            raise NotApplicable(coupon.candidate, reason)
    remaining = list(prices.amounts)
    free_units = [line.quantity for line in lines]
    applied = []
    for coupon in sorted(todo, key=lambda c: c.order) if len(todo) > 1 else todo:
        shares = _apply(coupon, prices, remaining, free_units)
        if shares is None or not any(shares):  # no coupon is spent for nothing
            if failed is not None:
                failed.append(coupon)  # _apply changed nothing: it took no cent
                continue
            if not strict:
                return None
            reason = "no unit of its own" if shares is None else "takes nothing off"
            raise NotApplicable(coupon.candidate, reason)
        applied.append((coupon, shares))
    return prices, remaining, applied


def _priced_again(lines: Sequence[Line], coupons: Sequence[_Coupon]) -> int:
    """What ``coupons`` pay "priced again" (DOMAIN.md: "removing that one coupon and
    pricing the rest again"): the coupons that cannot apply are left out, again until
    every one left applies (leaving out one that refuses store promotions changes the base
    prices, so another's threshold may fail next)."""
    coupons = list(coupons)
    while True:
        failed: list[_Coupon] = []
        run = _run(lines, coupons, strict=False, failed=failed)
        assert run is not None
        if not failed:
            return sum(run[1])
        coupons = [c for c in coupons if all(c is not f for f in failed)]


def _alone(lines: Sequence[Line], base: _Prices, coupon: _Coupon) -> int | None:
    """:func:`_run`'s payable for ``coupon`` alone (``base``: the lines' prices with no
    coupon), without the splits: one coupon's shares sum to exactly what it takes
    (:func:`apportion` hands out its total; an amount-off's split goes on until it is
    spent or its lines are at zero), so the payable is what the lines cost less that.
    ``tests/test_pricing_engine.py`` checks it against :func:`_run` by hypothesis."""
    indexes = coupon.indexes
    if not indexes:
        return None
    prices = _Prices(lines, frozenset(coupon.at_list)) if coupon.at_list else base
    amounts = prices.amounts
    eligible = 0
    for i in indexes:
        eligible += amounts[i]
    threshold = coupon.threshold
    if threshold is not None and eligible < threshold:
        return None
    benefit = coupon.candidate.benefit
    if coupon.phase == _FIXED:
        # The first line in scope with a unit (every unit is free when it is alone).
        unit = next((prices.units[i] for i in indexes if lines[i].quantity > 0), None)
        if unit is None:
            return None  # no unit of its own
        take = max(unit - _fixed_price(benefit), 0)
    elif coupon.phase == _DISCOUNT:
        take = _discount_off(benefit, eligible)
    else:
        off = int(benefit["amount_off"])
        take = off if off < eligible else eligible
    return sum(amounts) - take if take > 0 else None


def _quote(lines: Sequence[Line], coupons: Sequence[_Coupon], *, strict: bool) -> Quote | None:
    """:func:`_run` as a Quote."""
    run = _run(lines, coupons, strict=strict)
    if run is None:
        return None
    prices, remaining, applied = run
    coupon_quotes = []
    for coupon, shares in applied:
        per_line = [0] * len(lines)
        for i, share in zip(coupon.indexes, shares, strict=True):
            per_line[i] = share
        coupon_quotes.append(AppliedCoupon(coupon.candidate, sum(shares), tuple(per_line)))
    line_quotes = tuple(
        LineQuote(
            line.product_id,
            line.quantity,
            prices.units[i],
            prices.amounts[i],
            prices.amounts[i] - remaining[i],
            remaining[i],
        )
        for i, line in enumerate(lines)
    )
    total = sum(prices.amounts)
    payable = sum(remaining)
    candidates = [c.candidate for c in coupons]
    return Quote(
        line_quotes,
        tuple(coupon_quotes),
        total,
        total - payable,
        payable,
        _rank(payable, candidates),
    )


def evaluate(lines: Sequence[Line], combo: Sequence[Candidate]) -> Quote:
    """Price ``lines`` with exactly these coupons (a checkout that names them).

    Raises NotApplicable naming the first coupon that cannot apply: no line in scope,
    threshold not met, no unit of its own for a fixed price, or nothing to take.
    The stacking rules are :func:`allowed`'s."""
    quote = _quote(lines, [_prepare(c, lines) for c in combo], strict=True)
    assert quote is not None
    return quote


def unneeded(lines: Sequence[Line], combo: Sequence[Candidate], quote: Quote) -> Candidate | None:
    """The first coupon of ``combo`` (priced as ``quote``) that could be dropped without
    raising the payable, priced again, or the first coupon when the order pays no less
    without any: "no coupon is spent for nothing", for a checkout that names them."""
    if not combo:
        return None
    if _priced_again(lines, []) <= quote.payable:
        return combo[0]
    prepared = [_prepare(c, lines) for c in combo]
    for k, candidate in enumerate(combo):
        if _priced_again(lines, prepared[:k] + prepared[k + 1 :]) <= quote.payable:
            return candidate
    return None


def allowed(combo: Sequence[Candidate]) -> bool:
    """The stacking rules: alone, or all stackable, one per template, one discount."""
    if len(combo) <= 1:
        return True
    if not all(c.with_other_coupons for c in combo):
        return False
    templates = [c.template_id for c in combo]
    if len(set(templates)) != len(templates):
        return False
    return sum(1 for c in combo if c.benefit["type"] == "discount") <= 1


# --- the best combination ----------------------------------------------------------------
def _rank(payable: int, combo: Sequence[Candidate]) -> tuple[Any, ...]:
    ordered = sorted(combo, key=_template_id)
    return (
        payable,
        sum(1 for c in combo if c.needs_claim),
        min((c.expiry for c in combo), default=math.inf),
        len(combo),
        tuple(c.template_id for c in ordered),
        tuple(c.preference for c in ordered),
    )


def _template_id(candidate: Candidate) -> int:
    return candidate.template_id


def _preference(candidate: Candidate) -> tuple[bool, float, str]:
    return candidate.preference


def best_quote(
    lines: Sequence[Line],
    candidates: Iterable[Candidate],
    *,
    max_to_claim: int | None = None,
    memo: QuoteMemo | None = None,
) -> Quote:
    """The best combination of ``candidates`` for ``lines`` (possibly no coupon).

    ``max_to_claim``: at most this many coupons still to be claimed (the room left in
    the wallet); None for no limit. ``memo``: answers found before for inputs of the
    same shape (:class:`QuoteMemo`); the answer is the same with or without it."""
    claims_left = math.inf if max_to_claim is None else max_to_claim
    # One coupon stands for each template (the first by preference: held, expiring
    # first, lowest key); a coupon still to claim only while the wallet has room.
    representatives: dict[int, Candidate] = {}
    for candidate in sorted(candidates, key=_preference):
        if candidate.needs_claim and claims_left < 1:
            continue
        if candidate.template_id not in representatives:
            representatives[candidate.template_id] = candidate
    standing = list(representatives.values())
    if memo is None:
        return _best(lines, standing, claims_left)
    key = memo.key(lines, claims_left, standing)
    found = memo.get(key)
    if found is not None:
        return found.quote_for(standing)
    quote = _best(lines, standing, claims_left)
    memo.put(key, _Remembered(quote, standing))
    return quote


def _best(lines: Sequence[Line], standing: list[Candidate], claims_left: float) -> Quote:
    """:func:`best_quote` over the coupons that stand for their templates."""
    # The highest each line can cost: a threshold not met there is never met.
    highest = [max(line.list_price, line.promo_price or 0) * line.quantity for line in lines]
    empty = _quote(lines, [], strict=False)
    assert empty is not None
    base = _Prices(lines, frozenset())
    best_rank, best = empty.rank, ()
    stacking: list[_Coupon] = []
    for candidate in standing:
        coupon = _prepare(candidate, lines)
        threshold = coupon.threshold or 0
        if not coupon.indexes or sum(highest[i] for i in coupon.indexes) < threshold:
            continue
        if candidate.with_other_coupons:
            stacking.append(coupon)
            continue
        payable = _alone(lines, base, coupon)
        if payable is None or payable >= empty.payable or payable > best_rank[0]:
            continue
        rank = _rank(payable, [candidate])
        if rank < best_rank:
            best_rank, best = rank, (coupon,)
    if stacking:
        found = _Search(lines, stacking, claims_left, empty.payable).best()
        if found is not None and found[0] < best_rank:
            best_rank, best = found
    if not best:
        return empty
    quote = _quote(lines, best, strict=False)
    assert quote is not None
    return quote


class _Remembered:
    """A best quote and the coupons that stood for their templates when it was found."""

    __slots__ = ("positions", "quote", "size", "specs")

    def __init__(self, quote: Quote, standing: list[Candidate]) -> None:
        self.quote = quote
        self.size = 0
        where = {id(c): k for k, c in enumerate(standing)}
        self.positions = tuple(where[id(a.candidate)] for a in quote.coupons)
        # The key names benefits and scopes by identity: holding them keeps those
        # identities from being reused by other objects while the entry lives.
        self.specs = [(c.benefit, c.scope) for c in standing]

    def quote_for(self, standing: list[Candidate]) -> Quote:
        """The same quote with this request's coupons in the places of the first's."""
        quote = self.quote
        chosen = [standing[k] for k in self.positions]
        coupons = tuple(
            AppliedCoupon(candidate, applied.discount, applied.shares)
            for candidate, applied in zip(chosen, quote.coupons, strict=True)
        )
        return Quote(
            quote.lines,
            coupons,
            quote.total,
            quote.discount,
            quote.payable,
            _rank(quote.payable, chosen),
        )


class QuoteMemo:
    """Best quotes by the shape of their input, bounded (least recently used goes).

    Exact, by what :func:`_best` reads of its coupons (one standing for each template):
    the lines, the wallet's room, and per coupon its template, benefit and scope, its
    stacking flags, whether it is still to claim, and its expiry only by comparison
    (the earliest expiry of a combination breaks ties between combinations; which
    coupon stands for a template was decided before). Keys and coupon ids never enter
    a decision: every combination is one of templates, so two combinations never tie
    on everything before the coupons' own keys. So two inputs of one shape (the same
    keys here, with expiries replaced by their order) get the same combination, by
    position, and the same sums and shares; only the coupons differ, and the answer
    is rebuilt with the new ones. A product page of many shoppers holding coupons of
    the same templates is one shape. Benefits and scopes are named by identity (specs
    are parsed once per shop read and never changed in place); the entry holds them.
    """

    def __init__(self, entries: int = 2048, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple[Any, ...], _Remembered] = OrderedDict()
        self.bytes = 0  # the estimate (ENTRY_BYTES) of what is kept
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    @staticmethod
    def key(
        lines: Sequence[Line], claims_left: float, standing: list[Candidate]
    ) -> tuple[Any, ...]:
        order = {expiry: k for k, expiry in enumerate(sorted({c.expiry for c in standing}))}
        return (
            tuple(lines),
            claims_left,
            tuple([c.shape for c in standing]),
            tuple([order[c.expiry] for c in standing]),
        )

    def get(self, key: tuple[Any, ...]) -> _Remembered | None:
        found = self._kept.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._kept.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], value: _Remembered) -> None:
        if self.entries <= 0:
            return
        value.size = entry_bytes(len(key[0]), len(key[2]))
        if value.size > self.max_bytes:
            return
        old = self._kept.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._kept[key] = value
        self.bytes += value.size
        while len(self._kept) > self.entries or self.bytes > self.max_bytes:
            _, dropped = self._kept.popitem(last=False)
            self.bytes -= dropped.size

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0


def entry_bytes(lines: int, coupons: int) -> int:
    """What a memo entry takes, estimated: measured with tracemalloc (CPython 3.11) at
    1.6 KB for 5 coupons on one line, 4.1 KB for 30, 8.4 KB for 60, 14.2 KB for 100
    coupons on five lines; this estimate is above each."""
    return 1_200 + 150 * coupons + 150 * lines


class _Search:
    """The allowed subsets of the stacking coupons, priced by a walk in the order of
    application (one coupon applied per node), for each choice of the coupons that put
    their lines at list price. A branch is cut when even every coupon still to come could
    not bring it to the lowest payable found so far (found first: the walk tries each
    coupon before going without it); a subset it never priced is priced when minimality
    asks for it."""

    def __init__(
        self, lines: Sequence[Line], pool: list[_Coupon], claims_left: float, nothing: int
    ) -> None:
        self.lines = lines
        self.pool = sorted(pool, key=lambda c: c.order)
        self.bits = {id(c): 1 << k for k, c in enumerate(self.pool)}
        self.claims_left = claims_left
        self.nothing = nothing  # what the cart pays without any coupon
        # A combination is chosen only if it pays less than no coupon.
        self.upper = nothing - 1
        self.payables: dict[int, int] = {}  # subset (bit mask) -> payable, usable ones only
        self.again: dict[int, int] = {}  # the others, priced again (see _again)
        self.nodes = 0
        self.bounds: _Bounds | None = None

    def best(self) -> tuple[tuple[Any, ...], tuple[_Coupon, ...]] | None:
        refusers = [c for c in self.pool if c.refuses]
        # The most refusers first: more coupons, a lower payable found early, more cut.
        choices = (
            list(chosen)
            for size in range(len(refusers), -1, -1)
            for chosen in combinations(refusers, size)
        )
        for chosen in choices:
            self.nodes += 1
            if sum(1 for c in chosen if c.phase == _DISCOUNT) > 1:
                continue
            prices = _Prices(self.lines, _at_list(chosen))
            if not all(prices.meets(c) for c in chosen):
                continue
            forced = {id(c) for c in chosen}
            steps = [
                (c, id(c) in forced)
                for c in self.pool
                if id(c) in forced or (not c.refuses and prices.meets(c))
            ]
            # A few coupons: walking them all costs less than the bounds would.
            self.bounds = _Bounds(prices, steps) if len(steps) > SMALL_WALK else None
            self._walk(
                prices,
                steps,
                0,
                list(prices.amounts),
                [line.quantity for line in self.lines],
                0,
                0,
                False,
            )
            if self.nodes > NODE_BUDGET:
                break
        return self._choose()

    def _walk(
        self,
        prices: _Prices,
        steps: list[tuple[_Coupon, bool]],
        at: int,
        remaining: list[int],
        free_units: list[int],
        mask: int,
        claims: int,
        discounted: bool,
    ) -> None:
        left = sum(remaining)
        while at < len(steps):
            if self.nodes > NODE_BUDGET:
                return  # the budget is spent: the best found stands
            if self.bounds is not None and self.bounds.lowest(at, left, discounted) > self.upper:
                return  # nothing below can be chosen
            coupon, forced = steps[at]
            at += 1
            can_take = (not coupon.candidate.needs_claim or claims < self.claims_left) and (
                coupon.phase != _DISCOUNT or not discounted
            )
            if not can_take:
                if forced:
                    return
                continue
            self.nodes += 1
            taken, units = list(remaining), free_units
            if coupon.phase == _FIXED:
                units = list(free_units)
            shares = _apply(coupon, prices, taken, units)
            if shares is not None and any(shares):  # a coupon taking nothing is never used
                self._walk(
                    prices,
                    steps,
                    at,
                    taken,
                    units,
                    mask | self.bits[id(coupon)],
                    claims + coupon.candidate.needs_claim,
                    discounted or coupon.phase == _DISCOUNT,
                )
            if forced:
                return  # every subset of this choice holds it
        self.payables[mask] = left
        if left < self.upper:
            self.upper = left

    def _choose(self) -> tuple[tuple[Any, ...], tuple[_Coupon, ...]] | None:
        """The best-ranked minimal subset: by payable, then by rank within a payable,
        minimality checked in that order until one holds."""
        by_payable: dict[int, list[int]] = {}
        for mask, payable in self.payables.items():
            if mask and payable < self.nothing:  # (no coupon is spent for nothing)
                by_payable.setdefault(payable, []).append(mask)
        for payable in sorted(by_payable):
            ranked = []
            for mask in by_payable[payable]:
                coupons = tuple(c for c in self.pool if mask & self.bits[id(c)])
                ranked.append((_rank(payable, [c.candidate for c in coupons]), mask, coupons))
            ranked.sort(key=lambda entry: entry[0])
            for rank, mask, coupons in ranked:
                if self._minimal(mask, payable):
                    return rank, coupons
        return None

    def _minimal(self, mask: int, payable: int) -> bool:
        """Dropping any one coupon, the rest priced again pays more."""
        rest = mask
        while rest:
            bit = rest & -rest
            rest ^= bit
            without = self.payables.get(mask ^ bit)
            if without is None:  # not priced, or not every coupon of it applies
                without = self._again(mask ^ bit)
            if without <= payable:
                return False
        return True

    def _again(self, mask: int) -> int:
        """A subset some coupon of which cannot apply, priced again (kept, for the
        other subsets that drop down to it)."""
        payable = self.again.get(mask)
        if payable is None:
            coupons = [c for c in self.pool if mask & self.bits[id(c)]]
            payable = self.again[mask] = _priced_again(self.lines, coupons)
        return payable


class _Bounds:
    """The least a branch of the walk can still come to: what is left, less the most
    every coupon still to come could take, and a discount still to come at its best."""

    def __init__(self, prices: _Prices, steps: list[tuple[_Coupon, bool]]) -> None:
        # most[at]: what the amount-offs and fixed prices of steps[at:] take at most;
        # rates[at]: the discounts among steps[at:], as (rate_permille, max_off).
        self.most = [0] * (len(steps) + 1)
        self.rates: list[list[tuple[int, int | None]]] = [[] for _ in range(len(steps) + 1)]
        for at in range(len(steps) - 1, -1, -1):
            coupon = steps[at][0]
            benefit = coupon.candidate.benefit
            most = self.most[at + 1]
            rates = self.rates[at + 1]
            if coupon.phase == _DISCOUNT:
                rates = [*rates, (benefit["rate_permille"], benefit.get("max_off"))]
            elif coupon.phase == _FIXED:
                most += max(max(prices.units[i] for i in coupon.indexes) - _fixed_price(benefit), 0)
            else:  # never more than its lines cost
                most += min(
                    int(benefit["amount_off"]), sum(prices.amounts[i] for i in coupon.indexes)
                )
            self.most[at], self.rates[at] = most, rates

    def lowest(self, at: int, left: int, discounted: bool) -> int:
        before = max(left - self.most[at], 0)
        lowest = before
        if not discounted:
            for rate, max_off in self.rates[at]:
                # pays at least ceil(left x rate / 1000), and at least left - max_off
                after = -(-before * rate // 1000)
                if max_off is not None:
                    after = max(after, before - max_off)
                lowest = min(lowest, after)
        return lowest
