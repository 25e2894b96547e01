"""Post-coupon prices (券后价) on product and list pages, and the checkout preview (到手价)."""
