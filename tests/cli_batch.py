"""Many `qip` command lines in ONE child process, each with its own environment and its own
watchdog. Starting Python and importing qip_flow costs about a second per process; a module
whose cases only need to be kept apart from the test process (so a hang fails instead of
stalling the suite) pays it once here instead of once a case.

Each command is the real entry point (``qip_flow.cli.main.main``, as ``python -m qip_flow``),
with ``sys.argv``, ``os.environ``, stdout and stderr as a process of its own would have them.
The watchdog is faulthandler's C thread, so it fires even while a C extension holds the GIL:
a command over its time limit ends the child, is reported as not finished, and the commands
after it run in a fresh child.

Run by the tests as ``python tests/cli_batch.py JOB.json RESULTS.jsonl``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

SLACK = 60  # seconds on top of the commands' own limits before the child itself is given up


@dataclass(frozen=True)
class Command:
    """One `qip ARGS` run: ``env`` is its whole environment, as ``subprocess.run(env=…)``."""

    name: str
    args: list[str]
    env: dict[str, str]
    timeout: float


def run_in_one_process(commands: list[Command]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each command's exit code, stdout and stderr by name. A command that did not finish (over
    its limit, or the child died) gets exit code -1 and stderr saying so, with the child's own
    stderr (the watchdog's traceback of where it was stuck)."""
    assert len({c.name for c in commands}) == len(commands), "command names must be unique"
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    remaining = list(commands)
    with tempfile.TemporaryDirectory(prefix="qip-batch-") as folder:
        for attempt in range(len(commands)):
            if not remaining:
                break
            job, log = Path(folder) / f"job{attempt}.json", Path(folder) / f"out{attempt}.jsonl"
            job.write_text(json.dumps([asdict(c) for c in remaining]), encoding="utf-8")
            child = subprocess.run([sys.executable, __file__, str(job), str(log)],
                                   capture_output=True, text=True,
                                   timeout=sum(c.timeout for c in remaining) + SLACK)
            started = None
            for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
                record = json.loads(line)
                if "started" in record:
                    started = record["started"]
                    continue
                started = None
                results[record["name"]] = subprocess.CompletedProcess(
                    record["args"], record["code"], record["stdout"], record["stderr"])
            if started is not None:
                cut = next(c for c in remaining if c.name == started)
                results[started] = subprocess.CompletedProcess(
                    cut.args, -1, "", f"did not finish within {cut.timeout:g} s (the child ended "
                    f"with {child.returncode}); its stderr:\n{child.stderr}")
            elif len(results) < len(commands) and child.returncode != 0:
                raise RuntimeError(f"the batch child failed before its first command: "
                                   f"{child.stderr}")
            remaining = [c for c in remaining if c.name not in results]
    return results


def _child(job: Path, log_path: Path) -> None:
    """Run the job's commands in turn, noting each one's start before it runs (so the parent
    knows which one a watchdog ended) and its result after."""
    import faulthandler
    import io
    import os
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from qip_flow.cli.main import main

    commands = [Command(**c) for c in json.loads(job.read_text(encoding="utf-8"))]
    with log_path.open("a", encoding="utf-8") as log:
        for command in commands:
            log.write(json.dumps({"started": command.name}) + "\n")
            log.flush()
            os.environ.clear()
            os.environ.update(command.env)
            sys.argv = ["qip", *command.args]
            out, err = io.StringIO(), io.StringIO()
            faulthandler.dump_traceback_later(command.timeout, exit=True, file=sys.__stderr__)
            try:
                with redirect_stdout(out), redirect_stderr(err):
                    try:
                        main()
                        code = 0
                    except SystemExit as done:  # as the interpreter reads the exit code
                        code = done.code if isinstance(done.code, int) else \
                            0 if done.code is None else 1
                        if not isinstance(done.code, int | None):
                            print(done.code, file=sys.stderr)
                    except BaseException:  # as an uncaught exception ends a process
                        traceback.print_exc()
                        code = 1
            finally:
                faulthandler.cancel_dump_traceback_later()
            log.write(json.dumps({"name": command.name, "args": command.args, "code": code,
                                  "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
            log.flush()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
