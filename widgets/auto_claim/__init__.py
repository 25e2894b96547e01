"""Auto-claim on product detail (自动领券)."""
