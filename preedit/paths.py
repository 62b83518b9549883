"""Well-known locations: the repository checkout, the committed model repository, shared clips."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def model_repository() -> Path:
    """The model repository served by default (`PREEDIT_MODEL_REPOSITORY` overrides)."""
    env = os.environ.get("PREEDIT_MODEL_REPOSITORY")
    return Path(env) if env else REPO_ROOT / "model_repository"


def clips_dir() -> Path:
    """The shared real test clips (`PREEDIT_CLIPS` overrides); `../shared/data/clips` by default."""
    env = os.environ.get("PREEDIT_CLIPS")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "clips"


def cache_dir() -> Path:
    """Project-local cache for generated artefacts (backend dirs, eval caches)."""
    env = os.environ.get("PREEDIT_CACHE")
    path = Path(env) if env else REPO_ROOT / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
