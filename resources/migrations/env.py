"""Alembic environment of the review store's schema.

It runs two ways:

* from ``ReviewStore`` (``resources/review_store.py``), which hands over an open connection in
  ``config.attributes["connection"]``, already inside a transaction that holds the migration lock;
* from the ``alembic`` command (``alembic -c resources/migrations/alembic.ini upgrade head``), which
  connects to ``HITL_REVIEW_DB_URL`` itself and takes the same lock.

The version table is ``review_alembic_version``, so the review store can share a database with
other Alembic-managed applications (MLflow's tracking store keeps its own ``alembic_version``).
"""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from resources.review_store import VERSION_TABLE, Base, engine_url, lock_for_migration, review_db_url_from_env

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure_and_run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things in place: later revisions use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the DDL instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or review_db_url_from_env(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # ReviewStore: its transaction, its lock
        _configure_and_run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or review_db_url_from_env()
    engine = sa.create_engine(engine_url(url), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        lock_for_migration(connection)
        _configure_and_run(connection)
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
