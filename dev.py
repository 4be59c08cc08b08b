#!/usr/bin/env python3
"""Bootstrap and run qip_flow with nothing but Python installed.

    python3 dev.py demo        # build .venv if needed, then run `qip demo`
    python3 dev.py test        # build .venv if needed, then run the test suite in parallel
    python3 dev.py serve       # the web pages on the demo database, with "choose a demo person"
    python3 dev.py qip ARGS    # any qip command inside the project's environment

The virtual environment lives in .venv and is rebuilt when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".qip-installed"
SUPPORTED = ((3, 11), (3, 12))


def find_python() -> str:
    """This interpreter if it is supported, else a python3.12 / python3.11 on PATH."""
    if sys.version_info[:2] in SUPPORTED:
        return sys.executable
    for name in ("python3.12", "python3.11"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("qip_flow needs Python 3.11 or 3.12 (durable-rules does not build on 3.13); "
             f"this is {sys.version.split()[0]}. Install python3.12 and run again.")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    if not python.exists():
        print("Creating .venv …", flush=True)
        subprocess.run([find_python(), "-m", "venv", str(VENV)], check=True)
    print("Installing qip_flow and its dependencies into .venv (first run only) …", flush=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip", "setuptools", "wheel"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev,postgres]"], check=True)
    STAMP.write_text(wanted)
    return python


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist options for the suite: workers from QIP_TEST_WORKERS (default 2, the CI
    machine's cores; 0 runs in this one process), tests sharing a module fixture kept
    together (--dist loadgroup). Left alone when the arguments choose for themselves."""
    chosen = any(a in ("-n", "--numprocesses", "no:xdist") or a.startswith(("-n", "--numprocesses="))
                 for a in args)
    workers = os.environ.get("QIP_TEST_WORKERS", "2")
    if chosen or workers == "0":
        return []
    return ["-n", workers, "--dist", "loadgroup"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "qip", "serve"):
        print(__doc__)
        return 2
    python = ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "test":
        args = [str(python), "-m", "pytest", *parallel(rest), *rest]
    elif command == "demo":
        args = [str(python), "-m", "qip_flow", "demo", *rest]
    elif command == "serve":
        if not Path("qip.db").exists():
            print("no demo database here (qip.db): run `python3 dev.py demo` first")
            return 2
        args = [str(python), "-m", "qip_flow", "--db", "qip.db", "serve", "--dev-login", *rest]
    else:
        args = [str(python), "-m", "qip_flow", *rest]
    return subprocess.call(args, cwd=os.getcwd())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
