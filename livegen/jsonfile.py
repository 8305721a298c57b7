"""Reading the JSON files livegen keeps beside models and data (configs, splits, counts).

One place turns every way such a file can fail into one line naming it, in the error class of
the caller (a model's file is a ModelError, a split is a TrainingDataError...).
"""

from __future__ import annotations

import json
import os

from livegen.errors import LivegenError


def read_json(path: str | os.PathLike, error: type[LivegenError]) -> object:
    """The parsed contents of ``path``; ``error`` naming it when unreadable, not UTF-8, not JSON
    or nested deeper than Python's parser can follow."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.loads(handle.read())
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise error(f"{path}: not valid JSON ({reason})") from exc
