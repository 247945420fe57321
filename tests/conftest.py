"""Shared test helpers: run a ganlab CLI as a user would (a subprocess, real Hydra config) with tiny
overrides, and a session-wide data dir so the embedded dataset is rendered once per test session."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import forkserver
import pytest
import torch

from ganlab.metrics.suite import cpu_threads

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one pytest-xdist worker per core: in-process tests must not oversubscribe

# A tiny but real configuration: 32 px, narrow networks, one short epoch, no progress bars.
TINY = [
    "data.image_size=32",
    "data.per_class=24",
    "data.batch_size=8",
    "model.generator.width=8",
    "model.discriminator.width=8",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ganlab_data")


@pytest.fixture
def cli_env(data_dir, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(GANLAB_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", HOME=str(tmp_path / "home"),
               WANDB_SILENT="true", OMP_NUM_THREADS="1")  # tiny nets: one thread is faster
    return env


@pytest.fixture(scope="session")
def fork_server():
    """The warm start for CLI runs (tests/forkserver.py); None with GANLAB_TEST_FRESH_PROCESSES=1."""
    if not forkserver.enabled():
        yield None
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "OMP_NUM_THREADS"}
    server = forkserver.ForkServer(env)
    yield server
    server.close()


@pytest.fixture
def run_cli(cli_env, tmp_path, fork_server):
    """run_cli("ganlab.train", *overrides) -> CompletedProcess (never raises on a non-zero exit)."""

    def run(module: str, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return forkserver.run(fork_server, ["-m", module, *args], tmp_path, env or cli_env, timeout)

    return run


@pytest.fixture
def start_cli(tmp_path, fork_server):
    """start_cli(argv, env, log) -> a running `python <argv>` (pid, poll, wait, send_signal, returncode) in a
    session of its own, its output into the file `log`."""

    def start(argv: list[str], env: dict, log: Path):
        return forkserver.popen(fork_server, argv, tmp_path, env, log)

    return start


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"


CDCGAN_RUN = ["model=cdcgan", *TINY, "logger=none"]  # cdcgan_ckpt's command line (less hydra.run.dir)


@pytest.fixture(scope="session")
def cdcgan_ckpt(tmp_path_factory, data_dir, fork_server) -> Path:
    """A checkpoint of a tiny cdcgan run on brainsim, shared by the tests of generate/evaluate/augment."""
    run_dir = tmp_path_factory.mktemp("cdcgan_run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(GANLAB_DATA_DIR=str(data_dir), HOME=str(run_dir / "home"), OMP_NUM_THREADS="1")
    result = forkserver.run(fork_server, ["-m", "ganlab.train", *CDCGAN_RUN, f"hydra.run.dir={run_dir}"],
                            run_dir, env, 600)
    assert_ok(result)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine: one intra-op thread is many times faster than two
    (two spin-wait for a busy core). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    with cpu_threads(1, torch.device("cpu")):
        yield


@pytest.fixture(scope="module")
def tiny_data(data_dir):
    """The tiny brainsim set the TINY training uses (same parameters, so the render is shared)."""
    from ganlab.data.brainsim import BrainSimDataModule

    dm = BrainSimDataModule(str(data_dir / "brainsim"), image_size=32, per_class=24, batch_size=8, seed=42)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def signal_when(proc, ready, what: str, signum: int, log: Path, timeout: float = 300) -> None:
    """Wait until ready() holds for a started CLI run (see start_cli), then send it signum and wait for it to
    end. SIGKILL goes to its whole process group (nothing it started may outlive it); other signals to the
    process itself, as a scheduler's pre-emption does. Whatever fails on the way, the group is killed."""
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout, what)
        assert proc.poll() is None, f"the run ended before {what}:\n" + log.read_text()[-3000:]
        if signum == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
