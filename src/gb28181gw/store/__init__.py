"""Persistence: one interface (:mod:`.base`), an embedded SQLite default, and Redis (:mod:`.redis`)."""
