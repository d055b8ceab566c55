"""Revision 0002 (accounts, idempotency keys, claim ids, several tags) upgrades a live 0001 database and back."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from resources.review_store import VERSION_TABLE, Base, ReviewStore, alembic_config, head_revision


def migrate(url: str, revision: str, down: bool = False) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
    engine.dispose()


def test_0001_database_with_decisions_upgrades_to_0002_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(url, "0001")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "insert into review_tasks (task_key, batch, image_id, kind, slot, sku, category, file, image_key, mask_key, composite_key, "
            "width, height, reasons, signals, policy_version, model_version, status, claimed_by, created_at, closed_reason) values "
            "('b:i:0', 'b', 'i', 'escalation', 0, '', '', '', 'x', 'y', '', 10, 10, '', '{}', '', '', 'decided', 'ann', '2026-01-01', '')"
        ))
        conn.execute(sa.text(
            "insert into review_events (task_id, reviewer, decision, failure_mode, corrected_mask_key, note, seconds, created_at) "
            "values (1, 'ann', 'approve', 'edge_halo', '', '', 3.0, '2026-01-01')"
        ))
    engine.dispose()

    store = ReviewStore(url=url)  # first use migrates to the head
    with store.engine.connect() as conn:
        assert conn.execute(sa.text(f"select version_num from {VERSION_TABLE}")).scalar_one() == head_revision()
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []  # the ORM and the migrated schema agree
    latest = store.latest_decisions()
    assert latest["decision"].tolist() == ["approve"] and latest["failure_mode"].tolist() == ["edge_halo"]
    assert store.task_events(1)[0].request_id is None  # old events have no idempotency key
    store.add_user("ann", "reviewer", "$argon2id$placeholder")
    long_tags = ",".join(["background_residue", "translucent_region", "shadow_artifact", "missing_part", "edge_halo"])
    store.record_decision(1, "ann", "reject", seconds=1, failure_mode=long_tags, request_id="req-000000001")
    assert store.latest_decisions()["failure_mode"].tolist() == [long_tags]
    store.engine.dispose()

    migrate(url, "0001", down=True)
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    assert "review_users" not in inspector.get_table_names()
    assert "request_id" not in {c["name"] for c in inspector.get_columns("review_events")}
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from review_events")).scalar_one() == 2
    engine.dispose()
