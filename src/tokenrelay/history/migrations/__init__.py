"""Alembic migrations of the history schema, applied by ``SQLHistory.start()``."""
