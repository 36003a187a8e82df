"""Is a row stale? Config staleness (the method's current hyperparameters hash differently from the row's
config_hash) and code staleness (the source files that produce the row changed since the commit in its
code_version). Used by `axw status`.
"""

from __future__ import annotations

import functools
import inspect
import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_COMMIT = re.compile(r"\+(?:.*-g)?([0-9a-f]{7,40})(?:-dirty)?$")

#: source files whose change alters a stage's output, beside the method's own file
STAGE_FILES = {
    "activations": ["stages/activations.py", "axwarehouse/model"],
    "train": ["stages/train.py", "axwarehouse/methods/base.py", "axwarehouse/activation_store.py"],
    "latent": ["stages/latent.py", "axwarehouse/methods/base.py", "axwarehouse/activation_store.py"],
}


def commit_of(code_version: str | None) -> str | None:
    """The git commit inside a code_version such as ``0.1.0+6be9567b46-dirty`` (None for a bare version)."""
    m = _COMMIT.search(code_version or "")
    return m.group(1) if m else None


def method_file(method: str) -> str | None:
    """Repository-relative source file of a registered method."""
    from axwarehouse.methods import get

    try:
        path = Path(inspect.getfile(get(method))).resolve()
        return str(path.relative_to(REPO_ROOT))
    except Exception:  # unknown method (registered by a branch not merged here) or installed outside the repo
        return None


@functools.lru_cache(maxsize=256)
def changed_files(commit: str, paths: tuple[str, ...]) -> tuple[str, ...] | None:
    """Files among ``paths`` that differ between ``commit`` and the working tree; None when git cannot tell."""
    try:
        out = subprocess.run(["git", "diff", "--name-only", commit, "--", *paths], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return tuple(line for line in out.stdout.splitlines() if line)


def code_change(code_version: str | None, stage: str, method: str | None = None,
                method_only: bool = False) -> str | None:
    """A short note when the code that wrote rows of ``stage`` (and ``method``) changed since ``code_version``.

    ``method_only`` compares just the method's file (shared stage helpers change often without changing results).
    """
    commit = commit_of(code_version)
    if commit is None:
        return None
    paths = [] if method_only else list(STAGE_FILES.get(stage, []))
    if method and (f := method_file(method)):
        paths.append(f)
    if not paths:
        return None
    changed = changed_files(commit, tuple(paths))
    if changed is None:
        return f"written by code {code_version}, which git cannot compare here"
    if changed:
        return f"code changed since {commit[:10]}: {', '.join(changed)}"
    return None
