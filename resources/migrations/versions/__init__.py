"""Alembic revisions of the review store's schema, oldest first (see ``down_revision``)."""
