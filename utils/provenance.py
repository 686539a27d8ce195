"""``args.json``: everything needed to know later how a run was made."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> dict | None:
    """The code's commit and whether the work tree had changes; None outside a git checkout."""
    try:

        def git(*cmd):
            return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True, timeout=5, check=True).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def run_record(args, setting: str, data_source: str, existing: Path | None = None, config: dict | None = None) -> dict:
    """The record of a run's start; a resumed run keeps its first record and adds the resume. ``config``: the
    configuration as launched (every flag, before the run resolved --train_epochs auto), which ``--config``
    reads back."""
    import torch

    record = {
        "run": setting,
        "created": now(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "args": dict(vars(args)),
        **({"config": config} if config is not None else {}),
        "data_source": data_source,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": git_commit(),
    }
    if args.resume is None or existing is None or not existing.is_file():
        return record
    try:
        first = json.loads(existing.read_text())
    except (OSError, ValueError):
        return record
    resumes = first.get("resumes", [])
    resumes.append({key: record[key] for key in ("created", "command", "torch", "git")})
    return {**first, "resumes": resumes}
