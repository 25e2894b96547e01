"""The hot-path store: Redis (Lua) in production, an in-process twin on the embedded default.

Both implement :class:`bff.gate.base.Gate`; services never know which one they hold.
"""
