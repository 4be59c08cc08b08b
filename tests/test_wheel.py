"""The built wheel runs by itself: installed into a fresh virtual environment outside the
repository, it finds its shipped workflows, rules and examples and plays the demo.

The wheel is built from this checkout without network (``--no-build-isolation``). Its
dependencies are not downloaded again: the fresh environment sees the project environment's
site-packages through a ``.pth`` line (added paths do not run their own ``.pth`` files, so the
editable install of this checkout stays invisible there), while qip_flow itself comes only from
the wheel."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh environment outside the repository with only the wheel of qip_flow installed."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QIP_CONFIG")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(dist), str(REPO)], base, env)
    wheel = next(dist.glob("qip_flow-*.whl"))
    target = base / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "project-dependencies.pth").write_text(
        "\n".join([ours, *site.getsitepackages()]) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
          str(wheel)], base, env)
    env["PATH"] = f"{target / 'bin'}{os.pathsep}{env['PATH']}"
    return base, env


def test_the_installed_package_comes_from_the_wheel_and_carries_its_files(
        installed: tuple[Path, dict[str, str]]) -> None:
    base, env = installed
    done = _run([str(base / "venv/bin/python"), "-c",
                 "import qip_flow; print(qip_flow.__file__); print(qip_flow.SHIPPED_CONFIG)"],
                base, env)
    module, shipped = done.stdout.split()
    assert str(base / "venv") in module and str(REPO) not in module
    assert shipped.endswith("qip_flow/shipped")
    for name in ("workflows/plan.yaml", "rules/closure.yaml", "examples/organisation.yaml"):
        assert (Path(shipped) / name).is_file(), name


def test_init_demo_rules_and_board_pack_run_from_the_wheel(
        installed: tuple[Path, dict[str, str]]) -> None:
    base, env = installed
    work = base / "provider"
    work.mkdir()
    qip = str(base / "venv/bin/qip")
    _run([qip, "--version"], work, env)
    _run([qip, "--db", str(work / "fresh.db"), "init"], work, env)
    _run([qip, "rules", "test"], work, env)
    demo = _run([qip, "demo", "--dir", str(work / "demo")], work, env)
    assert "chain intact" in demo.stdout.lower() or "intact" in demo.stdout.lower()
    board = _run([qip, "--db", str(work / "demo" / "qip.db"), "report", "board"], work, env)
    assert "QIP-2026-021" in board.stdout
