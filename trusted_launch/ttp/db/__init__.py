"""TTP database: SQLAlchemy models, data access and Alembic migrations."""
