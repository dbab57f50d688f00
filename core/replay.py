"""``python -m core.replay ...``: the research CLI under a shorter name (the same ``main`` as
``python -m core.research``)."""

from __future__ import annotations

import sys

from core.research.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
