"""The notifications module's migration environment: its metadata and version table come from the
configuration `python -m app migrate` builds (app/kernel/migrations.py)."""

from alembic import context

from app.kernel.migrations import run_environment

run_environment(context)
