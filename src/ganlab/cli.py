"""What every entry point shares: where the configs are (`CONFIG_DIR`), bad input becomes one
`error: ...` line and exit status 2, and a run directory that the failed start left (config files
only) is removed."""
from __future__ import annotations

import functools
import re
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.experimental.callback import Callback
from omegaconf.errors import MissingMandatoryValue

from ganlab.errors import GanlabError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def config_dir() -> str:
    """The conf/ directory Hydra composes from: the checkout's top-level conf/ when ganlab runs from a
    checkout (PYTHONPATH=src, or an editable install), else the copy shipped in the package (ganlab/conf,
    see pyproject.toml), so an installed ganlab works from any directory."""
    package = Path(__file__).resolve().parent
    checkout = package.parents[1]
    if package.parent.name == "src" and (checkout / "pyproject.toml").is_file() \
            and (checkout / "conf" / "train.yaml").is_file():
        return str(checkout / "conf")
    return str(package / "conf")


CONFIG_DIR = config_dir()


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input, else None (a real bug)."""
    if isinstance(exc, GanlabError):
        return str(exc)
    if isinstance(exc, MissingMandatoryValue):  # a ??? key left out
        key = exc.full_key or "a mandatory key"
        return f"{key} is required: pass {key}=..."
    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        key = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                    if line.startswith("full_key:")), None)
        inner = user_error(cause) if cause is not None else None
        if inner is None and isinstance(cause, (ValueError, TypeError)):
            inner = str(cause)
        if inner is not None:
            if key and re.match(r"[A-Za-z_]\w*=", inner):  # "latent_dim=0: ..." of the node at `key`
                return f"{key}.{inner}"
            return f"{key}: {inner}" if key and not inner.startswith(key) else inner
    return None


def occupied_message(checkpoint_dir: Path, names: list[str]) -> str:
    return (f"{checkpoint_dir} already holds checkpoints {names[:3]}; pass ckpt_path=last to resume that run, "
            "or choose a new hydra.run.dir")


class OccupiedRunDirGuard(Callback):
    """A run into a run dir that holds an earlier run's `results` (glob patterns) is refused before Hydra writes
    its .hydra/ record and log there, unless the config key `unless` is set (train: ckpt_path resumes; augment,
    audit: overwrite=true replaces). Training refuses it again later, for any checkpoint dirpath
    (ganlab.training.resolve_resume)."""

    def __init__(self, results: list[str], unless: str, what: str, advice: str):
        self.results, self.unless, self.what, self.advice = list(results), unless, what, advice

    def on_run_start(self, config, **kwargs) -> None:
        if config.get(self.unless):
            return
        run_dir = Path(str(config.hydra.run.dir))
        found = sorted(str(p.relative_to(run_dir)) for pattern in self.results for p in run_dir.glob(pattern))
        if found:
            print(f"error: {run_dir} already holds {self.what} {found[:3]}; {self.advice}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run dir that holds nothing but Hydra's own files (nothing was trained or written)."""
    keep = {".hydra", f"{HydraConfig.get().job.name}.log", "config_resolved.yaml"}
    if (run_dir / ".hydra").is_dir() and all(p.name in keep for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        remove_empty_parents(run_dir)


def remove_empty_parents(path: Path) -> None:
    """The folders above `path` that it leaves empty (Hydra's outputs/<date>/), up to but never the working dir."""
    cwd = Path.cwd().resolve()
    for parent in path.resolve().parents:
        if cwd not in parent.parents:
            return
        try:
            parent.rmdir()  # only an empty folder
        except OSError:
            return


def stop_with(message: str) -> None:
    """A failed start: its run dir goes if nothing was written there, then the one error line."""
    if HydraConfig.initialized():
        remove_if_unused(Path(HydraConfig.get().runtime.output_dir))
    print(f"error: {message}", file=sys.stderr)


def entry_point(task):
    """Decorator for a Hydra task function."""

    @functools.wraps(task)
    def wrapper(cfg):
        try:
            return task(cfg)
        except KeyboardInterrupt:  # Ctrl-C before training's own handler is in place (it saves and exits 130)
            stop_with("interrupted (Ctrl-C); nothing was finished")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            message = user_error(exc)
            if message is None:
                raise
            stop_with(message)
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise  # one job of a sweep: Hydra records it as failed and the sweep goes on
            sys.exit(EXIT_BAD_INPUT)

    return wrapper
