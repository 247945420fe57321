"""The tests' warm start (tests/forkserver.py): a forked run sees what a fresh `python` would."""
from __future__ import annotations

import json
import os
import signal

import pytest

import forkserver

PROBE = """
import json, os, sys, atexit
import probe_module
atexit.register(lambda: print("exit handler ran", flush=True))
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "x": os.environ.get("PROBE_X"),
                  "found": probe_module.__file__, "name": __name__}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise RuntimeError("probe failed")
if sys.argv[1] == "interrupt":
    raise KeyboardInterrupt
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def server(fork_server):
    if fork_server is None:
        pytest.skip("GANLAB_TEST_FRESH_PROCESSES=1: no fork server")
    return fork_server


@pytest.fixture
def probe_env(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "probe_module.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(lib), PROBE_X="seen")
    return env


@pytest.mark.parametrize("how", ["0", "3", "raise", "interrupt"])
def test_a_forked_run_matches_a_fresh_process(how, server, probe_env, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    fresh = forkserver.run(None, ["-c", PROBE, how], work, probe_env, 60)
    forked = forkserver.run(server, ["-c", PROBE, how], work, probe_env, 60)
    assert forked.returncode == fresh.returncode == {"0": 0, "3": 3, "raise": 1, "interrupt": -signal.SIGINT}[how]
    assert forked.stdout == fresh.stdout and "exit handler ran" in forked.stdout
    report = json.loads(forked.stdout.splitlines()[0])
    assert report["argv"] == ["-c", how] and report["cwd"] == str(work) and report["x"] == "seen"
    assert report["found"] == str(tmp_path / "lib" / "probe_module.py") and report["name"] == "__main__"
    assert forked.stderr.startswith("to stderr")
    if how == "raise":
        assert "RuntimeError: probe failed" in forked.stderr and "RuntimeError: probe failed" in fresh.stderr


def test_a_child_runs_its_own_exit_handlers_not_the_servers(server, probe_env, tmp_path):
    """W&B makes its temporary media folder at import, in the server; a child's exit must not delete it."""
    code = ("import os; from wandb.sdk.data_types._private import MEDIA_TMP; "
            "print(MEDIA_TMP.name, os.path.isdir(MEDIA_TMP.name))")
    first, second = (forkserver.run(server, ["-c", code], tmp_path, probe_env, 60) for _ in range(2))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout and first.stdout.split()[1] == "True"  # the same folder, still there


def test_a_started_child_can_be_signalled_and_a_busy_server_falls_back(server, probe_env, tmp_path):
    sleeper = forkserver.popen(server, ["-c", "import time; print('up', flush=True); time.sleep(60)"],
                               tmp_path, probe_env, tmp_path / "sleeper.log")
    assert isinstance(sleeper, forkserver.Child) and sleeper.poll() is None
    # while it runs, another run is an ordinary subprocess
    other = forkserver.run(server, ["-c", PROBE, "0"], tmp_path, probe_env, 60)
    assert other.returncode == 0
    sleeper.send_signal(signal.SIGTERM)
    assert sleeper.wait(30) == -signal.SIGTERM
    assert server.idle()


def test_a_child_that_cannot_start_exits_1_and_the_server_goes_on(server, probe_env, tmp_path):
    gone = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):  # a fresh subprocess refuses a missing cwd before it starts
        forkserver.run(None, ["-c", PROBE, "0"], gone, probe_env, 60)
    failed = forkserver.run(server, ["-c", PROBE, "0"], gone, probe_env, 60)
    assert failed.returncode == 1 and "FileNotFoundError" in failed.stderr and str(gone) in failed.stderr
    assert forkserver.run(server, ["-c", PROBE, "0"], tmp_path, probe_env, 60).returncode == 0
