"""Points (积分): the per-member ledger, exchange offers under the platform policy, exchange."""
