"""Platform database: migrations, SQLite/PostgreSQL backends, typed queries, the async writer.

Conventions shared by every module here:
- timestamps are integer epoch SECONDS (``storage.ids.now_s``), as in the seed's own rows;
- ids are UUIDv7 strings (``storage.ids.new_id``), time-ordered;
- SQL is written once with ``?`` placeholders (``storage.db`` adapts it to PostgreSQL);
- the hot path writes only through ``storage.writer.Writer``, never awaiting the database.
"""
