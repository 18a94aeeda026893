"""The first schema: reads, scored films, kept film pixels and settings (issues 29 and 30).

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-06

Written out column by column rather than from ``schema.metadata``: a migration is a frozen record of what
the schema was at that revision, and later changes to ``schema.py`` come as new revisions beside this one.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

NAME = 200


def _model_columns() -> list[sa.Column]:
    return [sa.Column("model_name", sa.String(NAME)), sa.Column("model_version", sa.String(100)),
            sa.Column("weights_sha256", sa.String(64)), sa.Column("operating_point", sa.String(NAME))]


def upgrade() -> None:
    op.create_table(
        "reads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("supersedes", sa.Integer, sa.ForeignKey("reads.id", name="fk_reads_supersedes")),
        sa.Column("film_sha256", sa.String(64), nullable=False),
        *_model_columns(),
        sa.Column("probability", sa.Float),
        sa.Column("ai_call", sa.String(100)),
        sa.Column("agrees", sa.Boolean),
        sa.Column("read", sa.String(100)),
        sa.Column("reference", sa.String(32)),
        sa.Column("heatmap_on_region", sa.Boolean),
        sa.Column("reader", sa.String(NAME), nullable=False),
        sa.Column("role", sa.String(32)),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("site", sa.String(NAME)),
        sa.PrimaryKeyConstraint("id", name="pk_reads"),
        sa.UniqueConstraint("supersedes", name="uq_reads_supersedes"),
    )
    op.create_index("ix_reads_film_sha256", "reads", ["film_sha256"])
    op.create_index("ix_reads_created", "reads", ["created"])
    op.create_table(
        "scored_films",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("site", sa.String(NAME)),
        sa.Column("source", sa.String(16), nullable=False),
        *_model_columns(),
        sa.Column("backend", sa.String(32)),
        sa.Column("logit", sa.Float),
        sa.Column("probability", sa.Float),
        sa.Column("ai_call", sa.String(100)),
        sa.Column("ood_score", sa.Float),
        sa.Column("ood_flag", sa.Boolean, nullable=False),
        sa.Column("warnings", sa.String(200)),
        sa.Column("film_sha256", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_scored_films"),
    )
    op.create_index("ix_scored_films_created", "scored_films", ["created"])
    op.create_index("ix_scored_films_film_sha256", "scored_films", ["film_sha256"])
    op.create_table(
        "film_pixels",
        sa.Column("film_sha256", sa.String(64), nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("film_sha256", name="pk_film_pixels"),
    )
    op.create_table(
        "settings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("changed_by", sa.String(NAME), nullable=False),
        sa.Column("changed", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_settings"),
    )
    op.create_index("ix_settings_key", "settings", ["key"])


def downgrade() -> None:
    for index, table in (("ix_settings_key", "settings"), ("ix_scored_films_film_sha256", "scored_films"),
                         ("ix_scored_films_created", "scored_films"), ("ix_reads_created", "reads"),
                         ("ix_reads_film_sha256", "reads")):
        op.drop_index(index, table_name=table)
    for table in ("settings", "film_pixels", "scored_films", "reads"):
        op.drop_table(table)
