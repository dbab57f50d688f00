"""What is stored: the SQLite journal (``store``), the engine's book kept in memory over it (``book``), the
decision log in its two forms (``decisions``) and the TTL key store (``kv``).

The book writes through the store, so ``book`` imports ``store`` and never the other way round: ``Store.book``
builds the class it is given here, whichever of the two a caller imports first."""

from core.state.book import Book
from core.state.store import Store

Store.book_type = Book
