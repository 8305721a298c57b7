"""setuptools' build_py, plus the shipped model and presets (pyproject.toml's ``cmdclass``).

A wheel must carry ``models/default`` and ``presets/`` so that ``livegen demo`` works from any
directory after ``pip install .``, but they live at the repository's top level, outside the
package.  This copies every file of those folders into ``livegen/_shipped/`` of the build
(livegen/shipped.py finds them there); whatever the folders hold, not a fixed list, so a
retrained model with new files ships as it is.  Editable installs read the checkout directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("models/default", "presets")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            source = ROOT / name
            files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else []
            if not files:
                raise RuntimeError(f"nothing to ship in {source}")
            target = Path(self.build_lib) / "livegen" / "_shipped" / name
            if target.exists():
                shutil.rmtree(target)  # a file removed from the checkout must not linger in the wheel
            target.mkdir(parents=True)
            for file in files:
                self.copy_file(str(file), str(target / file.name))
