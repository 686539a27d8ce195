"""What the launcher declared about this process (torchrun's environment), readable before anything starts."""

from __future__ import annotations

import os


def launched_world_size() -> int:
    """Processes in this run, as torchrun declares them in WORLD_SIZE (1 for a plain run)."""
    text = os.environ.get("WORLD_SIZE", "1")
    return int(text) if text.isdigit() and int(text) > 0 else 1
