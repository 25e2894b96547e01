"""The claim widget (领券组件): which coupons a shopper can take here, and in what state."""
