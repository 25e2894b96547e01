"""Coupon events: the transactional outbox, its relay to RabbitMQ, the pull feed."""
