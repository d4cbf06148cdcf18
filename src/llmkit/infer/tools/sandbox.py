"""An optional Python tool: the model's code runs in a separate, locked-down process.

Off unless asked for (``--tools python``). Each call gets a fresh temporary directory and a fresh
interpreter started through :mod:`llmkit.infer.tools._sandbox_boot`, which, before the code runs:

* moves the process into a new **network namespace** with no interfaces but a down loopback, so
  no connection can be made (``unshare(CLONE_NEWNET)``; unprivileged users get a user namespace
  too), and drops root to ``nobody`` so it cannot enter another namespace;
* restricts the filesystem with **Landlock** (Linux >= 5.13, no privileges needed): everything is
  read-only except the temporary directory; TCP bind/connect are denied as well where the kernel
  has Landlock network rules;
* sets **rlimits**: CPU seconds, address space, file size, open files, processes.

The parent kills the whole process group at the wall-clock limit. Output is capped. Where the
kernel lacks namespaces or Landlock the tool refuses to run (an error the model and the user see)
rather than run unconfined.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmkit.infer.tools.base import Tool, ToolError

BOOT = Path(__file__).with_name("_sandbox_boot.py")


@dataclass
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    file_mb: int = 16
    output_chars: int = 4000
    processes: int = 16


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int
    reason: str
    """``ok``, ``error`` (non-zero exit), ``timeout`` (wall clock), ``cpu`` (CPU limit), ``killed``."""


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox; its stdout/stderr (capped), exit code and why it ended."""
    limits = limits or SandboxLimits()
    work = Path(tempfile.mkdtemp(prefix="llmkit-sandbox-"))
    try:
        (work / "main.py").write_text(code, encoding="utf-8")
        python, as_uid = _interpreter()
        if as_uid >= 0:
            os.chown(work, as_uid, as_uid)
            os.chown(work / "main.py", as_uid, as_uid)
        out, err = open(work / ".stdout", "wb+"), open(work / ".stderr", "wb+")  # noqa: SIM115 (closed below)
        cmd = [
            sys.executable,
            "-I",
            str(BOOT),
            str(work),
            str(limits.cpu_seconds),
            str(limits.memory_mb),
            str(limits.file_mb),
            str(limits.processes),
            python,
            str(as_uid),
        ]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=limits.wall_seconds)
            reason = "ok" if rc == 0 else ("cpu" if rc in (-signal.SIGXCPU, -signal.SIGKILL) else "error")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            reason = "timeout"
        stdout, stderr = (_read(f, limits.output_chars) for f in (out, err))
        out.close()
        err.close()
        if rc == 3 and stderr.startswith("sandbox:"):
            raise ToolError(stderr.strip())
        return SandboxResult(stdout, stderr, rc, reason)
    finally:
        shutil.rmtree(work, ignore_errors=True)


NOBODY = 65534


def _world_usable(path: str) -> bool:
    """Whether a user with no rights of its own can run ``path`` (every directory searchable)."""
    real = Path(os.path.realpath(path))
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o005)


def _interpreter() -> tuple[str, int]:
    """(python to run the code with, uid to run it as; -1 = keep ours). Root hands the code to
    ``nobody``, which needs an interpreter every user can run: this one, else the system's."""
    if os.geteuid() != 0:
        return sys.executable, -1
    for candidate in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if candidate and _world_usable(candidate):
            return candidate, NOBODY
    return sys.executable, -1  # root without capabilities; processes then bounded by time only


def _read(f, limit: int) -> str:
    f.seek(0)
    data = f.read(limit * 4 + 1).decode("utf-8", errors="replace")
    return data if len(data) <= limit else data[:limit] + "\n[output truncated]"


def _python_tool(args: dict) -> str:
    r = run_python(args["code"])
    if r.reason == "timeout":
        return "error: the code ran past the time limit and was stopped"
    if r.reason == "cpu":
        return "error: the code used up its CPU time and was stopped"
    parts = [r.stdout.rstrip()]
    if r.returncode != 0:
        parts.append(f"error (exit {r.returncode}):\n" + r.stderr.strip()[-1500:])
    return "\n".join(p for p in parts if p) or "(no output; print what you want to see)"


PYTHON = Tool(
    name="python",
    description="Run Python code in a sandbox (no network, no files outside its own folder, seconds of CPU); "
    "returns what it prints.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    function=_python_tool,
)
