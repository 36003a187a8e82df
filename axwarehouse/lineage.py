"""Lineage helpers: code version, config hashing and run ids stamped on every row."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from axwarehouse import __version__

_REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus ``git describe`` of the source tree when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=_REPO_ROOT, capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Any) -> str:
    """Short stable hash of a JSON-able config (16 hex chars)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]
