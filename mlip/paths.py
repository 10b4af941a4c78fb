"""Where mlip keeps files of its own: the one place that resolves the user cache folder.

Standard library (and ``platformdirs``) only, so every layer may import it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """The user cache folder of mlip joined with ``parts``: ``$MLIP_CACHE_DIR`` if set, else the
    platform's user cache dir (``~/.cache/mlip`` on Linux). Not created here.

    Used for the CP factor cache (``cache_dir("cp")``) and the extxyz files that ``mlip-train``
    converts (``cache_dir("converted")``).
    """
    root = os.environ.get("MLIP_CACHE_DIR")
    if root is None:
        import platformdirs

        root = platformdirs.user_cache_dir("mlip")
    return Path(root).joinpath(*parts)
