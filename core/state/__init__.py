"""What is stored: the SQLite journal (``store``), the engine's book kept in memory over it (``book``), the
decision log in its two forms (``decisions``) and the TTL key store (``kv``)."""
