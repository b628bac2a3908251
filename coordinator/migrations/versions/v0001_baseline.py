"""baseline: the schema of bnnbench 0.1

Revision ID: 0001
Revises:
Create Date: 2026-05-20

Devices with identity and attributes, jobs with a measurement protocol and re-measure count.
A fresh database gets every table. A database made before migrations (``create_all`` of an
earlier version, no ``alembic_version``) keeps its tables and rows and gets what that version
lacked: missing tables, columns (all nullable or with a server default, added in place, as
the pre-migration stop-gap did) and indexes. The tables are frozen here, not imported from
coordinator.models: later migrations change the schema from this point.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "models",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("arch", sa.String(100)),
        sa.Column("algorithm", sa.String(100)),
        sa.Column("analysis_status", sa.String(16), nullable=False),
        sa.Column("analysis", sa.JSON()),
        sa.Column("analysis_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    sa.Table(
        "artifacts",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("library", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("report", sa.JSON()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model_id", "library"),
    )
    sa.Table(
        "devices",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(512), nullable=False, unique=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("arch", sa.String(64), nullable=False),
        sa.Column("os", sa.String(255), nullable=False),
        sa.Column("cpu_model", sa.String(255), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("isa_flags", sa.JSON(), nullable=False),
        sa.Column("transport", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("emulated", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("attributes", sa.JSON()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    sa.Table(
        "agents",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
    )
    sa.Table(
        "jobs",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("library", sa.String(32), nullable=False),
        sa.Column(
            "artifact_id", sa.Integer(), sa.ForeignKey("artifacts.id"), nullable=False, index=True
        ),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id")),
        sa.Column("warmup", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.JSON()),
        sa.Column("remeasures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_id", sa.String(64)),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("leased_by", sa.Integer(), sa.ForeignKey("agents.id")),
        sa.Column("error", sa.Text()),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Index("ix_jobs_status_id", "status", "id"),
    )
    sa.Table(
        "results",
        md,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False, index=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=False),
        sa.Column("samples_ms", sa.JSON(), nullable=False),
        sa.Column("runtime_version", sa.String(255), nullable=False),
        sa.Column("device_fingerprint", sa.String(512), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    return md


def _create(table: sa.Table) -> None:
    table.create(op.get_bind())  # with its indexes; portable DDL from the frozen definition


def _complete(table: sa.Table, insp: sa.Inspector) -> None:
    """A table made by an earlier version's create_all: add its missing columns and indexes."""
    have = {c["name"] for c in insp.get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in have]
    for c in missing:
        if not c.nullable and c.server_default is None:
            raise RuntimeError(
                f"cannot add {table.name}.{c.name} to an existing table: NOT NULL, no default"
            )
    if missing:
        with op.batch_alter_table(table.name) as batch:
            for c in missing:
                batch.add_column(c._copy())
    indexes = {i["name"] for i in insp.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            op.create_index(
                index.name, table.name, [c.name for c in index.columns], unique=index.unique
            )


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    existing = set(insp.get_table_names())
    for table in _tables().sorted_tables:
        if table.name in existing:
            _complete(table, insp)
        else:
            _create(table)


def downgrade() -> None:
    for table in reversed(_tables().sorted_tables):
        op.drop_table(table.name)
