"""Alembic environment: runs on the connection maild hands it (see store.db.upgrade_database)."""

from alembic import context

from maild.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with 'maild db upgrade', which supplies the connection")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
