"""Claims on analyses and conversions; one agent per name and device (issue 14).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 12:28:44.190452

Several coordinators may share one PostgreSQL database: the coordinator converting an
artifact (or analysing a model) records who it is and until when its claim holds
(``claimed_by``, ``claim_expires_at``; ``analysis_claimed_by``, ``analysis_claim_expires_at``),
so another one takes the work over only once that claim expired (coordinator.conversion).

``agents(name, device_id)`` becomes unique, so two registrations of one name racing on two
coordinators end with one row. Older versions could leave several rows of one name on one
device: the newest (created last; the highest id among equals) is kept, the jobs and results
of the others are re-pointed to it, and the others are deleted (their tokens stop working:
such an agent registers again). Columns and index already there (a database made by
``create_all`` of a later models file) are left as they are.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = logging.getLogger("bnnbench.coordinator.migrations")

INDEX = "uq_agents_name_device"
COLUMNS = {
    "artifacts": ("claimed_by", "claim_expires_at"),
    "models": ("analysis_claimed_by", "analysis_claim_expires_at"),
}
# every column that references agents.id at this revision
AGENT_REFERENCES = (("jobs", "leased_by"), ("results", "agent_id"))


def _dedupe_agents(conn: sa.Connection) -> int:
    """Keep the newest row of each (name, device_id); re-point references; returns how many
    rows were deleted."""
    agents = sa.table(
        "agents",
        sa.column("id"),
        sa.column("name"),
        sa.column("device_id"),
        sa.column("created_at"),
    )
    groups = conn.execute(
        sa.select(agents.c.name, agents.c.device_id)
        .group_by(agents.c.name, agents.c.device_id)
        .having(sa.func.count() > 1)
    ).all()
    deleted = 0
    for name, device_id in groups:
        ids = list(
            conn.scalars(
                sa.select(agents.c.id)
                .where(agents.c.name == name, agents.c.device_id == device_id)
                .order_by(agents.c.created_at.desc(), agents.c.id.desc())
            )
        )
        keep, drop = ids[0], ids[1:]
        for table, column in AGENT_REFERENCES:
            t = sa.table(table, sa.column(column))
            conn.execute(sa.update(t).where(t.c[column].in_(drop)).values({column: keep}))
        conn.execute(sa.delete(agents).where(agents.c.id.in_(drop)))
        deleted += len(drop)
        log.warning(
            "agents %s: duplicates of agent %d (%r on device %d) merged into it",
            drop,
            keep,
            name,
            device_id,
        )
    return deleted


def upgrade() -> None:
    conn = op.get_bind()
    inspector = sa.inspect(conn)
    for table, columns in COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        claimed_by, expires_at = columns
        if claimed_by not in have:
            op.add_column(table, sa.Column(claimed_by, sa.String(length=200), nullable=True))
        if expires_at not in have:
            op.add_column(table, sa.Column(expires_at, sa.DateTime(), nullable=True))
    if INDEX not in {i["name"] for i in inspector.get_indexes("agents")}:
        _dedupe_agents(conn)  # before the index: it would refuse the duplicates
        op.create_index(INDEX, "agents", ["name", "device_id"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="agents")
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            for column in reversed(columns):
                batch_op.drop_column(column)
