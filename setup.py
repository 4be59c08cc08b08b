"""Build hook: the wheel carries the shipped governance files.

``workflows/``, ``rules/`` and ``examples/`` stay at the top of the repository, where governance
leads and the design expect them, and are the one editable copy. Building a wheel copies them
into ``qip_flow/shipped/`` so an installed qip_flow finds them with ``importlib.resources``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("workflows", "rules", "examples")


class BuildWithShippedConfig(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the repository's own folders
            return
        target = Path(self.build_lib) / "qip_flow" / "shipped"
        for name in SHIPPED_FOLDERS:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithShippedConfig})
