"""The notifications module's Alembic environment (docs/decisions/0028-migrations.md)."""
