"""The ``vt`` application: its command groups, global options, and the helpers every command uses."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from vt_models.allocator import keep_large_allocations
from vt_models.config import (
    DEFAULT_PARAMS,
    Config,
    ConfigError,
    apply_overrides,
    format_validation_error,
    load_config,
)

app = typer.Typer(help="Transfer learning on video: data, training, evaluation, registry.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
data_app = typer.Typer(help="Sample data and data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
models_app = typer.Typer(help="The backbone registry.", no_args_is_help=True)
report_app = typer.Typer(help="Reports.", no_args_is_help=True)
detect_app = typer.Typer(
    help="Video object detection: annotated data, detectors, mAP, tracking, registry.", no_args_is_help=True
)
app.add_typer(detect_app, name="detect")
app.add_typer(report_app, name="report")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")

log = logging.getLogger("vt")
M = TypeVar("M", bound=BaseModel)


class _State:
    params: Path = DEFAULT_PARAMS
    params_given: bool = False
    overrides: list[str] = []
    progress: bool = True


state = _State()


@app.callback()
def _main(
    params: Annotated[Path | None, typer.Option("--params", "-p", help="params file (default: ./params.yaml)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-S", help="override a param: key.path=value")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="hide progress bars")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state.params = params or DEFAULT_PARAMS
    state.params_given = params is not None
    state.overrides = list(overrides or [])
    state.progress = not no_progress and sys.stderr.isatty() or os.environ.get("VT_PROGRESS") == "1"


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def config() -> Config:
    try:
        return load_config(state.params, state.overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def section(name: str, model: type[M]) -> M:
    """One config section; without a params file (and none asked for), its defaults plus ``-S``."""
    if state.params.is_file() or state.params_given:
        return getattr(config(), name)
    data = apply_overrides({name: {}}, state.overrides).get(name, {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise fail(format_validation_error(exc, f"-S {name}.*", model).replace(f"'{name}.", "'")) from None


def fit_line(label: str, monitor: str, summary: Any, scored_on: str = "") -> str:
    """What a fit kept, in one line: the best validated epoch, or a fixed schedule's last one. ``scored_on``
    names the validation videos where they are not the trained data set's own (" on ...")."""
    epoch = summary.result.best_epoch + 1
    score = f"{summary.best_score:.4f}{scored_on}"
    if summary.result.selected:
        return f"{label}: best val {monitor} {score} at epoch {epoch} -> {summary.best_path}"
    return (
        f"{label}: val {monitor} {score} at epoch {epoch}, the last (a fixed schedule: too few "
        f"validation videos to pick an epoch) -> {summary.best_path}"
    )


def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a library function, turning its documented errors into a clean CLI error."""
    from vt_models.data.extract import ExtractError
    from vt_models.data.probe import ProbeError
    from vt_models.data.split import SplitError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, ProbeError, ExtractError, SplitError) as exc:
        raise fail(str(exc)) from None


ROLLBACK_HELP = "instead: move `champion` back to the previous champion (the registry's alias history)"
REASON_HELP = "with --rollback: why, recorded in the alias history"


def promote_or_rollback(
    label: str, steps: Any, candidate: str | None, rollback: bool, reason: str | None, run: Path | None = None
) -> None:
    """`vt promote` and `vt detect promote`: the gate on ``candidate`` (or on the run folder ``run``), or with
    ``rollback`` the previous champion back (``steps``: the task's steps module, with ``promote`` and
    ``rollback``)."""
    from vt_models.promotion import LABEL_FREE, LABEL_FREE_DECISION, PromotionError

    if reason is not None and not rollback:
        raise fail(f"{label}: --reason goes with --rollback (the gate records its own reasons)")
    if rollback and (candidate or run is not None):
        raise fail(f"{label}: --rollback moves the alias back; it takes no candidate")
    try:
        if rollback:
            move = steps.rollback(config(), reason or "no reason given")
            was = f"v{move.from_version}" if move.from_version else "none"
            typer.echo(f"{label} --rollback: champion {was} -> v{move.to_version} ({move.reason})")
            return
        d = steps.promote(config(), candidate) if run is None else steps.promote(config(), candidate, run)
    except PromotionError as exc:
        raise fail(str(exc)) from None
    verdict = "PROMOTED to champion" if d.promoted else "kept as challenger"
    said = f"{LABEL_FREE_DECISION}: {d.reason}" if d.basis == LABEL_FREE else d.reason  # as the log and summary mark it
    typer.echo(f"{label}: {d.model_name} v{d.candidate_version} ({d.candidate_backbone}) {verdict}: {said}")


def _trace_imports(dest: Path) -> None:
    """Append this command and the vt_models source files it ran to ``dest`` (one JSON line)."""
    root = Path(__file__).resolve().parents[2]  # the folder holding vt_models/
    files = sorted(
        Path(m.__file__).resolve().relative_to(root).as_posix()
        for name, m in list(sys.modules.items())
        if name.split(".")[0] == "vt_models" and getattr(m, "__file__", None)
    )
    with dest.open("a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "files": files}) + "\n")


def _exit_status(code: int | str | None) -> int:
    """A SystemExit's code as a process exit status: None is 0; a message (Python prints it) is 1."""
    return code if isinstance(code, int) else 0 if code is None else 1


def run_in_process(args: list[str]) -> int:
    """The ``vt`` command ``args`` run in this process, as in its own (a DVC stage's command); its exit status."""
    saved = vars(state).copy()  # the command's own options replace the caller's while it runs
    try:
        app(args, prog_name="vt")
    except SystemExit as exc:  # how click ends every command
        return _exit_status(exc.code)
    except Exception:  # noqa: BLE001 - a crash fails the stage with its traceback, as in its own process
        traceback.print_exc()
        return 1
    finally:
        vars(state).clear()
        vars(state).update(saved)
    return 0


_EXIT_CODE: list[int | str | None] = []  # the command's exit status, once it has one


def _skip_finalisation() -> None:
    """End the process once every exit handler but this one has run (it is registered first, so runs last).

    Python's finalisation after that tears down every module object by object: 1-4 s for a command that
    imported torch, torchvision and mlflow, and a DVC pipeline runs a dozen such commands. By then the
    command's runs are ended and its files closed; only the logs and the standard streams are left to flush.
    A command that ends in an uncaught exception exits the usual way, traceback and all.
    """
    if not _EXIT_CODE:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status(_EXIT_CODE[0]))


def main() -> None:
    import atexit

    atexit.register(_skip_finalisation)  # first registered, last to run
    # VT_TRACE_IMPORTS=file: record the code each command runs, so dvc.yaml's deps can be checked
    # against it (tests/test_dvc.py): a stage must list every file that can change its outputs.
    if trace := os.environ.get("VT_TRACE_IMPORTS"):
        atexit.register(_trace_imports, Path(trace))
    keep_large_allocations()  # before any tensor: ~1.7x faster CPU training (see vt_models.allocator)
    try:
        app()
    except SystemExit as exc:  # how click ends every command, failed or not
        _EXIT_CODE.append(exc.code)
        raise


if __name__ == "__main__":
    main()
