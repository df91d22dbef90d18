"""Persistence: one interface (:mod:`.base`), an embedded SQLite default, Redis later."""
