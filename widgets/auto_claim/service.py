"""Auto-claim: opening a product page claims its auto-claim templates the user may still take.

Each template goes through the claim core (every claim rule and the ledger's
no-oversell guarantees hold); refused ones are listed with their reason. A
repeated call claims nothing new (the per-user limit), and the same request_id
replays the first reply.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from bff import fastdump
from bff.coupons.claims import COUPON_SCHEMA, ClaimContext, ClaimService
from bff.coupons.wallet import WalletService
from bff.errors import ApiError
from bff.idempotency import Reply, body_hash
from widgets.coupon_price.service import PriceService


class AutoClaimService:
    def __init__(self, claims: ClaimService, wallet: WalletService, prices: PriceService) -> None:
        self.claims = claims
        self.wallet = wallet
        self.prices = prices

    async def auto_claim(self, context: ClaimContext, product_id: str, request_id: str) -> Reply:
        digest = body_hash({"op": "auto", "product_id": product_id})

        async def work() -> Reply:
            template_ids = await self.prices.auto_claim_templates(context.shop_id, product_id)
            auto_held = await self.prices.auto_claimed(
                context.shop_id, context.user_id, template_ids
            )
            claimed: list[dict[str, Any]] = []
            skipped: list[dict[str, Any]] = []
            for template_id in template_ids:
                template = await self.claims.templates.get(context.shop_id, template_id)
                if template is None:
                    skipped.append({"template_id": template_id, "reason": "NOT_FOUND"})
                    continue
                held = auto_held.get(template_id)
                if held is not None:
                    # Opening the page again issues nothing new, whatever per_user_limit
                    # allows: auto-claim hands out one coupon per template per user.
                    reason = (
                        "LIMIT_REACHED" if held >= template.per_user_limit else "ALREADY_CLAIMED"
                    )
                    skipped.append({"template_id": template_id, "reason": reason})
                    continue
                try:
                    result = await self.claims.attempt(
                        context,
                        template,
                        "auto",
                        f"a:{context.user_id}:{request_id}:{template_id}",
                        digest,
                    )
                except ApiError as exc:  # rate limited: this one is skipped, not the page
                    skipped.append({"template_id": template_id, "reason": exc.code})
                    continue
                if result.refusal is not None:
                    skipped.append({"template_id": template_id, "reason": result.refusal.code})
                else:
                    view = self.wallet.view(result.coupon, template)
                    claimed.append(fastdump.dump(COUPON_SCHEMA, view))
            detail = await self.prices.product(
                context.shop_id, context.user_id, product_id, 1, None
            )
            return Reply(
                HTTPStatus.OK, {"claimed": claimed, "skipped": skipped, "price": detail["price"]}
            )

        return await self.claims.once(context, f"a:{request_id}", digest, work)
