"""A warm start for the tests' command-line runs.

Each `python -m ganlab.<cli>` spends 5-6 s of a 2-core machine importing torch, torchvision, torchmetrics,
Lightning, Hydra and W&B before it reads its first override, and the suite starts about a hundred of
them. The server below imports those once, then forks one child per run. The child is a real process
with its own pid, session, working directory, environment and stdout/stderr files, and it runs the
module exactly as `python -m` would (runpy, `__main__`, sys.argv), so a test still sees what a user
sees; only the library imports are already done. Subprocesses that a run starts itself (DDP ranks,
W&B's service) are ordinary fresh processes.

GANLAB_TEST_FRESH_PROCESSES=1 turns it off: every run is then a plain `subprocess` of its own.
The server runs one child at a time; a run asked for while one is alive gets a plain subprocess.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELOAD = ("torch", "torchvision", "torchmetrics", "scipy.signal", "lightning.pytorch", "hydra", "omegaconf",
           "wandb", "ganlab.training")


def enabled() -> bool:
    return os.environ.get("GANLAB_TEST_FRESH_PROCESSES", "") in ("", "0")


# --- the client (in the pytest process) -----------------------------------------------------------------

class Child:
    """What the tests use of subprocess.Popen: pid, poll(), wait(timeout), returncode."""

    def __init__(self, server: "ForkServer", pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server._collect(self, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.server._collect(self, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ForkServer:
    def __init__(self, env: dict):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, bufsize=1)
        self.running: Child | None = None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the test fork server did not start (exit {self.proc.wait()})")

    def start(self, argv: list[str], cwd, env: dict, stdout: Path, stderr: Path | None) -> Child:
        """Fork `python <argv>` (argv: ["-m", module, *args] or ["-c", code, *args]); stdout and stderr go to
        files (stderr None: into stdout's file)."""
        if self.running is not None:
            raise RuntimeError("the fork server runs one child at a time")
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(stdout),
                   "stderr": None if stderr is None else str(stderr)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._reply(None)
        self.running = Child(self, reply["pid"])
        return self.running

    def idle(self) -> bool:
        return self.running is None or self.running.poll() is not None

    def _reply(self, timeout: float | None) -> dict | None:
        if timeout is not None and not select.select([self.proc.stdout], [], [], timeout)[0]:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the test fork server died (exit {self.proc.wait()})")
        return json.loads(line)

    def _collect(self, child: Child, timeout: float | None) -> None:
        if child is not self.running:
            return
        reply = self._reply(timeout)
        if reply is not None:
            child.returncode, self.running = reply["returncode"], None

    def close(self) -> None:
        if self.running is not None:
            self.running.kill()
            self.running.wait(60)
        self.proc.stdin.close()
        self.proc.wait(60)


def run(server: ForkServer | None, argv: list[str], cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout), forked from
    the warm server when there is one and it is idle."""
    if server is None or not server.idle():
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="forked_") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        child = server.start(argv, cwd, env, out, err)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess([sys.executable, *argv], child.returncode, out.read_text(),
                                           err.read_text())


def popen(server: ForkServer | None, argv: list[str], cwd, env: dict, log: Path) -> Child | subprocess.Popen:
    """Start `python <argv>` in a session of its own, stdout and stderr into `log`, and return at once
    (forked from the warm server when there is one and it is idle)."""
    if server is None or not server.idle():
        with open(log, "w") as fh:
            return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    return server.start(argv, cwd, env, log, None)


# --- the server (its own process) -----------------------------------------------------------------------

def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _own_exit_handlers() -> None:
    """The server's exit handlers belong to the server: the temporary directories that libraries make at
    import (W&B's media folder) must outlive each child. The child keeps the standard ones a fresh process
    also has, and those it registers itself."""
    import atexit
    import logging
    import multiprocessing.util
    import weakref

    import torch.utils.data._utils

    atexit._clear()
    for info in list(weakref.finalize._registry.values()):
        info.atexit = False
    weakref.finalize._registered_with_atexit = False
    atexit.register(logging.shutdown)
    atexit.register(multiprocessing.util._exit_function)
    atexit.register(torch.utils.data._utils._set_python_exit_flag)


def _run_child(request: dict, channel: tuple[int, int]) -> None:
    """In the forked child: become `python <argv>` in the request's directory and environment, then exit."""
    import atexit
    import runpy
    import traceback

    import torch

    for fd in channel:
        os.close(fd)
    _own_exit_handlers()
    os.setsid()
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("OMP_NUM_THREADS"):  # read by the OpenMP runtime at import, in the server: apply it
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = out if request["stderr"] is None else os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                                        0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    buffering = 1 if os.environ.get("PYTHONUNBUFFERED") else -1
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=buffering, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    os.chdir(request["cwd"])  # after the redirection, so a failure is in the run's own stderr

    flag, target, *args = request["argv"]
    code, interrupted = 0, False
    try:
        # as `python -m` / `python -c` build it: the working directory (or ""), then $PYTHONPATH, then site
        sys.path[:] = [os.getcwd() if flag == "-m" else "", *_pythonpath(), *SITE_PATH]
        if flag == "-m":
            sys.argv = [target, *args]
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args]
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except BaseException as error:
        traceback.print_exc()
        code, interrupted = 1, isinstance(error, KeyboardInterrupt)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if interrupted:  # as CPython: an uncaught Ctrl-C ends the process by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


SITE_PATH: list[str] = []  # the server's sys.path less its script directory and its own $PYTHONPATH


def serve() -> None:
    import importlib

    SITE_PATH.extend(sys.path[1 + len(_pythonpath()):])

    for name in PRELOAD:
        importlib.import_module(name)
    # the replies go through a private copy of stdout; the children's fds 0-2 are their own
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    reply = open(replies, "w", buffering=1)
    reply.write("ready\n")
    for line in open(requests):
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                _run_child(request, (requests, replies))  # ends in os._exit
            except BaseException:  # a setup step failed (say, cwd gone): never fall back into this loop
                import traceback

                traceback.print_exc()
            finally:
                os._exit(1)
        reply.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
