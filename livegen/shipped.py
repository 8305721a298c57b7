"""Where the shipped ``models/`` and ``presets/`` are.

In a clone (and an editable install) they are the repository's top-level folders.  A wheel
(``pip install .``) carries them inside the package, as ``livegen/_shipped/models/default`` and
``livegen/_shipped/presets``: scripts/wheel_data.py copies them there at build time, every file
the folders hold, so the repository's top level stays as the design card fixes it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INSIDE_WHEEL = "_shipped"


def shipped_dir(name: str) -> Path:
    """``name`` (``"presets"``, ``"models"``) inside the installed package, else in the checkout."""
    inside = PACKAGE_DIR / INSIDE_WHEEL / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name
