"""The store of record on SQLAlchemy 2 (SQLite or PostgreSQL), split by aggregate."""
