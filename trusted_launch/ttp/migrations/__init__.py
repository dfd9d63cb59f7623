"""Alembic migration environment of the TTP database."""
