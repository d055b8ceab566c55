"""Alembic migrations of the review store (``env.py``, ``versions/``); applied by ``ReviewStore`` on first use."""
