"""The `compress` typer app and what its commands share: the exit-code contract, option parsing,
JSON output and progress bars. Commands live in toolchain/cli.py and toolchain/cli_train.py."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from graphs.errors import InputError
from toolchain.data_sources import SPEC_FORMS

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Latency-budgeted width and depth pruning of CNNs: PyTorch -> ONNX -> pruned model + torch weights.")
out = Console()
err = Console(stderr=True)
# Arguments several commands take, declared once (typer reads the Annotated metadata).
OnnxFile = Annotated[Path, typer.Argument(help="ONNX file (from `compress export`)", show_default=False)]
PrunedDir = Annotated[Path, typer.Argument(help="a `compress prune` output directory", show_default=False)]
Normalize = Annotated[str, typer.Option(
    "--normalize", help="how DATA images are normalised; use what the model was trained with: auto (the DATA "
    "spec's own: built-in sets the mean/std of their train split, CIFAR the papers' constants, image folders "
    "ImageNet's), none (pixels in [0,1], e.g. YOLO), dataset, imagenet, inception (mean and std 0.5: "
    "TensorFlow-trained weights such as EfficientNet-Lite), cifar10, cifar100")]
RECHECK_HELP = ("re-time the stored anchors of a table measured more than H hours ago before it is used: the host's "
                "timing drifts, and the anchors set the whole table's level (4 entries, not the grid); warns when "
                "one moved > 5%. 0: always; inf: never")
# Every --data / --calib help lists the DATA forms from the one tuple the parser accepts.
DATA_FORMS = ", ".join(SPEC_FORMS)
DEBUG = {"on": os.environ.get("COMPRESS_DEBUG") == "1"}


@app.callback()
def _global(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    DEBUG["on"] = DEBUG["on"] or debug


def command(fn):
    """Register `fn` as the command named like it (a trailing `_command` dropped, so a command may share
    its name with the library function it calls); turn InputError (and unreadable files) into the
    one-line, exit-2 contract."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            if DEBUG["on"]:
                raise
            # escape: a message naming `.[yolo]` or a list must not be read as rich markup
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except (PermissionError, IsADirectoryError) as exc:
            if DEBUG["on"]:
                raise
            err.print(f"[red]error:[/red] {exc.filename}: {exc.strerror}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    return app.command(fn.__name__.removesuffix("_command"))(wrapper)


def parse_shape(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--input-shape must be comma-separated integers like 1,3,224,224, got {text!r}") from None
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise InputError(f"--input-shape must be positive integers like 1,3,224,224, got {text!r}")
    return shape


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")


def train_config(epochs, lr, batch_size, weight_decay, seed):
    from toolchain.train import TrainConfig

    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise InputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    return TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed)


class EpochProgress:
    def __init__(self, epochs: int, per_epoch: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}[/bold]"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=err, transient=True)
        self.per_epoch = per_epoch
        self.task = self.bar.add_task("train", total=per_epoch, epoch=0)
        self.bar.start()

    def __call__(self, epoch: int, seen: int) -> None:
        self.bar.update(self.task, completed=seen, epoch=epoch + 1)

    def stop(self) -> None:
        self.bar.stop()


class TableProgress:
    """rich progress bar with ETA for `profile`; already-stored entries count as done."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]profiling[/bold] {task.fields[item]}"), BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True)
        self.task = None

    def start(self, total: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("profile", total=total, completed=done, item="")

    def advance(self, candidate) -> None:
        label = f"{candidate.item} k={candidate.k}" if candidate.kind == "group" else f"{candidate.item} removed"
        self.bar.update(self.task, advance=1, item=label)

    def stop(self) -> None:
        if self.task is not None:  # a bar never started must not print its (empty) last frame
            self.bar.stop()

