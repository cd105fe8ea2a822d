"""Platform database: migrations, SQLite/PostgreSQL backends, typed queries, the async writer."""
