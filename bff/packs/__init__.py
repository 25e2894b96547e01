"""Member center (会员中心): gift packs (会员礼包), their popup, and claiming them."""
