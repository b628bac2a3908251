"""Migration scripts, one line of history: ``v<rev>_<slug>.py`` (Alembic skips this file)."""
