"""The ``birdcls`` command line: each command parses its arguments, calls one library function, prints.

Errors the user can fix come out as one line on stderr with exit code 2 (130 for Ctrl-C in training);
torch and fastai are imported only by the commands that need them, so ``birdcls --help`` is instant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from typer.core import TyperGroup

from .errors import BirdclsError, Interrupted, Terminated, interrupt_exit_code

# typer re-exports BadParameter but not its base, the usage error that every parse error is raised as
_UsageError: type[Exception] = typer.BadParameter.__mro__[1]
_PARSING = "birdcls.parsing"  # ctx.meta key: the command path whose arguments are being parsed


@contextmanager
def _one_line_usage(ctx: typer.Context | None = None) -> Iterator[None]:
    """Click's usage block (usage line, hint, blank line, error) as one stderr line that names the fix."""
    try:
        yield
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `birdcls` or `birdcls datasets` alone: the help
            raise
        about = getattr(exc, "ctx", None)
        # an option missing its value carries no context: name the subcommand being parsed
        where = about.command_path if about is not None else (ctx.meta.get(_PARSING, "birdcls") if ctx else "birdcls")
        message = exc.format_message().rstrip(".")  # type: ignore[attr-defined]
        typer.echo(f"error: {message}: see '{where} --help'", err=True)
        raise typer.Exit(2) from None


class _OneLineUsageGroup(TyperGroup):
    """The command groups. Every subcommand's parse errors pass up through its group's make_context or
    invoke, so the wrapper here covers them all."""

    def make_context(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def resolve_command(self, ctx, args):  # type: ignore[no-untyped-def]
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta[_PARSING] = f"{ctx.command_path} {name}"
        return name, command, rest

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        with _one_line_usage(ctx):
            return super().invoke(ctx)


app = typer.Typer(
    cls=_OneLineUsageGroup,
    name="birdcls",
    help="From named classes to a trained, evaluated, exported image classifier.\n\n"
         "Pipeline: birdcls split RAW DATA; birdcls train DATA --out RUN; birdcls export RUN --format onnx -o M.onnx; "
         "birdcls predict M.onnx photos/",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _raise_terminated(main_pid: int, signum: int, frame: object) -> None:
    """SIGTERM as :class:`Terminated` in the command's process. A forked worker that inherited the handler
    (decoding, data loading) ends as SIGTERM's default would have ended it."""
    import os
    import signal

    if os.getpid() != main_pid:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn BirdclsError into one stderr line and its exit code; Ctrl-C into exit 130, and SIGTERM into the
    same clean-up as Ctrl-C, then exit 143."""
    import os
    import signal
    import threading
    from functools import partial

    main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    previous = signal.signal(signal.SIGTERM, partial(_raise_terminated, os.getpid())) if main else None
    try:
        yield
    except (BirdclsError, Interrupted) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        typer.echo("terminated" if isinstance(exc, Terminated) else "interrupted", err=True)
        raise typer.Exit(interrupt_exit_code(exc)) from None
    except OSError as exc:
        if exc.filename is None:  # not about a path the user gave: a bug, shown whole
            raise
        typer.echo(f"error: {_path_problem(exc)}", err=True)
        raise typer.Exit(2) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _path_problem(exc: OSError) -> str:
    """One line for a file-system error on a path: what happened where, and the likely fix."""
    import errno

    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        fix = "choose a folder you can write to"
    elif isinstance(exc, (NotADirectoryError, FileExistsError, IsADirectoryError)):
        fix = "a file or folder is in the way: choose another path or move it"
    elif exc.errno == errno.ENOSPC:
        fix = "free some disk space, or choose another disk"
    else:
        fix = "check the path"
    return f"{exc.filename}: {exc.strerror or type(exc).__name__}: {fix}"


@app.command(epilog='Example: birdcls scrape "cockatoo" "black-kite=black kite bird" --per-class 100 --out data/raw')
def scrape(
    classes: list[str] = typer.Argument(..., help="classes as 'label=query' or just 'query'"),
    out: Path = typer.Option(Path("data/raw"), "--out", "-o", help="dataset folder: OUT/<label>/ + manifest.jsonl"),
    per_class: int = typer.Option(100, help="valid, unique images wanted per class"),
    engine: str = typer.Option("ddg", help="ddg, bing, google (Selenium + Chromium) or urls"),
    urls_file: Path | None = typer.Option(None, help="with --engine urls: CSV of label,url rows or a text file"),
    min_size: int = typer.Option(64, help="shorter side below this many pixels is rejected"),
    workers: int = typer.Option(8, help="parallel downloads"),
    delay: float = typer.Option(1.0, help="seconds between search calls (be polite)"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none: one per class, on stderr; the table follows"),
) -> None:
    """Scrape images per class from an image search engine; resumable, with a manifest."""
    from ._terminal import progress_mode
    from .scrape import DownloadLimits, make_engine, scrape_classes

    with _user_errors():
        progress_mode(progress)  # a bad value is refused before the engine starts (Chromium, for bing/google)
        search = make_engine(engine, urls_file=urls_file)
        report = scrape_classes(classes, out, search, per_class=per_class, limits=DownloadLimits(min_size=min_size),
                                workers=workers, delay=delay, progress=progress)
    typer.echo(report.table())
    typer.echo(f"wrote {report.out}" + (f" ({report.manifest.name} records every URL tried)" if report.manifest else ""))


@app.command(epilog="Example: birdcls clean data/raw --auto --report   |   birdcls clean data/raw --undo")
def clean(
    data: Path = typer.Argument(..., help="dataset: DATA/<class>/ or DATA/{train,val,test}/<class>/"),
    auto: bool = typer.Option(False, "--auto", help="run the automatic checks and quarantine what they flag"),
    undo: bool = typer.Option(False, "--undo", help="move back what the last --auto run quarantined"),
    undo_all: bool = typer.Option(False, "--all", help="with --undo: every cleaning decision, not just the last run"),
    report: bool = typer.Option(False, "--report", help="write a contact sheet (PNG) and a list (HTML) of the flagged"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be quarantined"),
    min_size: int = typer.Option(64, help="shorter side below this many pixels is flagged"),
    max_aspect: float = typer.Option(3.0, help="long/short side above this is flagged"),
    max_distance: int = typer.Option(4, help="perceptual-hash bits for near duplicates (-1: off)"),
    dark: float | None = typer.Option(None, help="flag mean brightness (0-255) below this, e.g. 20"),
    blurry: float | None = typer.Option(None, help="flag Laplacian variance below this, e.g. 30"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none (on stderr)"),
) -> None:
    """Automatic quality checks: quarantine (never delete) corrupt, duplicate, tiny, odd images; undo."""
    from .clean import CleanConfig, clean_auto, undo_clean

    with _user_errors():
        if undo:
            clash = [name for name, on in (("--auto", auto), ("--dry-run", dry_run), ("--report", report)) if on]
            if clash:
                raise BirdclsError(f"--undo cannot be combined with {' or '.join(clash)}: run the checks "
                                   "(--auto) and the undo (--undo) as two commands")
            n = undo_clean(data, "all" if undo_all else "run")
            typer.echo(f"undid {n} decision{'s' if n != 1 else ''}; the files are back in place")  # n >= 1
            return
        if undo_all:
            raise BirdclsError("--all only goes with --undo: birdcls clean DATA --undo --all")
        if not auto:
            raise BirdclsError("say what to do: --auto to run the checks, or --undo (in a notebook, use Cleaner)")
        config = CleanConfig(min_size=min_size, max_aspect=max_aspect, near_distance=max_distance, dark=dark,
                             blurry=blurry)
        result = clean_auto(data, config, report=report, dry_run=dry_run, progress=progress)
    typer.echo(result.table())
    for flag in result.check.flags:  # a dry run lists all; a real run the files left in place for a person to judge
        if dry_run or not flag.move:
            typer.echo(f"  {'' if dry_run else 'reported, not moved: '}{flag.path}: {flag.reason} ({flag.detail})")


@app.command(epilog="Example: birdcls split data/raw data/birds --ratio 0.7 0.15 0.15 --seed 1337   |   "
                     "birdcls split --check data/birds")
def split(
    src: Path = typer.Argument(..., help="folder with one sub-folder of images per class (with --check: a split dataset)"),
    dst: Path | None = typer.Argument(None, help="output folder: DST/{train,val,test}/<class>/"),
    out: Path | None = typer.Option(None, "--out", "-o", help="the output folder, as an option (instead of DST)"),
    ratio: tuple[float, float, float] = typer.Option((0.7, 0.15, 0.15), "--ratio",
                                                     help="train val test fractions, three numbers: --ratio 0.7 0.15 0.15"),
    seed: int = typer.Option(1337, help="random seed: same input + seed = same split"),
    max_distance: int = typer.Option(4, help="perceptual-hash bits within which images count as near duplicates"),
    overwrite: bool = typer.Option(False, help="replace DST if it exists"),
    move: bool = typer.Option(False, help="move the images instead of copying them"),
    check: bool = typer.Option(False, "--check", help="report duplicates across the splits of SRC instead"),
    report: Path | None = typer.Option(None, help="with --check: where to write the PNG of example pairs"),
    strict: bool = typer.Option(False, "--strict", help="with --check: exit 1 when any pair is found (scripts, CI)"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none (on stderr)"),
) -> None:
    """Split class folders 70/15/15 (seeded, duplicates kept together), or --check a split dataset for leakage."""
    from .split import check_leakage, split_dataset

    with _user_errors():
        if dst is not None and out is not None:
            raise BirdclsError(f"split got two output folders, {dst} and --out {out}: give one")
        dst = dst if dst is not None else out
        if check and dst is not None:
            raise BirdclsError(f"--check takes one split dataset, got a second folder {dst}: e.g. birdcls split "
                               f"--check {src}")
        if strict and not check:
            raise BirdclsError("--strict goes with --check: birdcls split --check DATA --strict")
        if check:
            leakage = check_leakage(src, max_distance=max_distance, report_png=report, progress=progress)
            typer.echo(leakage.summary())
            if strict and leakage.count():
                raise typer.Exit(1)
            return
        if dst is None:
            raise BirdclsError("split needs SRC and DST (or --out DST, or --check DIR): e.g. birdcls split data/raw "
                               "data/birds")
        result = split_dataset(src, dst, ratio=ratio, seed=seed, overwrite=overwrite, move=move,
                               max_distance=max_distance, progress=progress)
    typer.echo(result.table())
    if result.duplicate_groups:
        typer.echo(f"kept {result.duplicate_groups} groups of duplicate images together (each in one split)")
    if result.skipped_non_images:
        typer.echo(f"skipped {result.skipped_non_images} non-image file{'s' if result.skipped_non_images != 1 else ''}")
    if result.empty_classes:
        typer.echo(f"left out class folder(s) without readable images: {', '.join(result.empty_classes)}", err=True)
    if result.nested_images:
        typer.echo(result.nested_note(), err=True)
    if result.unreadable:
        typer.echo(result.unreadable_note(src), err=True)
    typer.echo(f"wrote {result.dst} (split.json lists every file's split and hashes)")


def _parse_set(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise BirdclsError(f"--set takes key=value, got '{pair}': e.g. --set label_smoothing=0.1")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@app.command(epilog="Example: birdcls train data/birds --out models/birds --epochs 5 --size 160")
def train(
    data: Path = typer.Argument(..., help="dataset folder with train/, val/ (or valid/) and test/"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder to create"),
    recipe: str | None = typer.Option(None, help="shipped recipe name (see `birdcls recipes`) or a YAML file"),
    arch: str | None = typer.Option(None, help="backbone (see `birdcls models`; default tf_efficientnet_lite0)"),
    weights: Path | None = typer.Option(None, help="backbone weights file (.pth/.safetensors)"),
    pretrained: bool | None = typer.Option(None, "--pretrained/--scratch",
                                           help="start from ImageNet weights (default) or train from scratch"),
    size: int | None = typer.Option(None, help="input size in pixels (default 224)"),
    bs: int | None = typer.Option(None, help="batch size (default 64)"),
    epochs_head: int | None = typer.Option(None, help="head-only epochs, body frozen (default 10)"),
    epochs: str | None = typer.Option(None, help="fine_tune epochs (after fastai's one frozen epoch), or auto (the "
                                                 "default: 0 for a pretrained body, 10 from scratch)"),
    lr: float | None = typer.Option(None, help="base learning rate (default 0.002)"),
    patience: int | None = typer.Option(None, help="EarlyStopping patience in epochs (default 3)"),
    seed: int | None = typer.Option(None, help="random seed (default 42)"),
    device: str | None = typer.Option(None, help="auto, cpu, cuda (or cuda:N) or mps"),
    set_: list[str] | None = typer.Option(None, "--set", help="any config key, e.g. --set label_smoothing=0.1"),
    overwrite: bool = typer.Option(False, help="replace an existing run folder"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its best checkpoint"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none"),
) -> None:
    """Train a classifier (the head on a frozen pretrained body; --epochs N also fine-tunes it), then report on test/.

    Defaults are the default recipe's; --recipe's values replace them, and flags and --set replace both."""
    from .learn import train as train_run

    with _user_errors():
        flags = {"arch": arch, "weights": str(weights) if weights else None, "pretrained": pretrained, "size": size,
                 "bs": bs, "epochs_head": epochs_head, "epochs": epochs, "lr": lr, "patience": patience, "seed": seed,
                 "device": device}
        # a flag left unset must not erase the same key given with --set
        overrides = {**_parse_set(set_ or []), **{k: v for k, v in flags.items() if v is not None}}
        result = train_run(data, out, recipe, overwrite=overwrite, resume=resume, progress=progress, **overrides)
    for line in result.summary():
        typer.echo(line)


@app.command(epilog="Example: birdcls evaluate models/birds data/birds/test")
def evaluate(
    model: Path = typer.Argument(..., help="run folder or exported model (.pkl/.safetensors/.onnx)"),
    data: Path = typer.Argument(..., help="labelled folder (<class>/ images), or a dataset whose test/ is used"),
    out: Path | None = typer.Option(None, "--out", "-o", help="report folder (default: beside the model, named "
                                                              "after the model file and the data)"),
    trust: bool = typer.Option(False, help="allow loading a .pkl you did not create (runs its code)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda (or cuda:N) or mps"),
    precision: str = typer.Option("auto", help="PyTorch models: auto (bf16 on a CUDA GPU, else float32), "
                                                "float32 or bf16"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none (on stderr)"),
) -> None:
    """Re-run the test report (metrics, confusion matrix, top losses) on any labelled folder."""
    from .evaluate import evaluate as evaluate_model
    from .evaluate import report_lines

    with _user_errors():
        report = evaluate_model(model, data, out, trust=trust, device=device, progress=progress,
                                precision=precision)
    typer.echo("\n".join(report_lines(report)))


@app.command(epilog="Example: birdcls export models/birds --format safetensors -o models/birds.safetensors")
def export(
    run: Path = typer.Argument(..., help="run folder from `birdcls train` (or its model.pkl)"),
    format: str | None = typer.Option(None, "--format", "-f", help="pkl, safetensors, onnx or onnx-int8 (default: from "
                                                                  "-o's name: .pkl, .safetensors, .onnx, .int8.onnx)"),
    output: Path = typer.Option(..., "--output", "--out", "-o", help="file to write"),
    trust: bool = typer.Option(False, help="allow reading a .pkl you did not create"),
    data: Path | None = typer.Option(None, help="onnx-int8: dataset whose train/ calibrates and val/ checks "
                                                   "the int8 model (default: the one the run trained on)"),
) -> None:
    """Export a trained run as fastai .pkl, .safetensors (+ .json), .onnx or int8 .onnx."""
    from .export import export as export_model

    with _user_errors():
        dest = export_model(run, format, output, trust=trust, data=data)
    typer.echo(f"wrote {dest}" + (f" and {dest.with_suffix('.json')}" if dest.suffix.lower() == ".safetensors" else ""))
    if dest.suffix.lower() == ".pkl":
        typer.echo("note: a .pkl runs code when loaded; share the .safetensors export instead", err=True)


@app.command(epilog="Example: birdcls predict models/birds.onnx photo1.jpg some_dir/ --top-k 3 --json")
def predict(
    model: Path = typer.Argument(..., help="run folder or exported model (.pkl/.safetensors/.onnx)"),
    images: list[Path] = typer.Argument(..., help="image files and/or folders"),
    top_k: int = typer.Option(3, "--top-k", "-k", help="how many labels to list per image"),
    as_json: bool = typer.Option(False, "--json", help="print JSON rows to stdout"),
    csv_path: Path | None = typer.Option(None, "--csv", "--out", "-o", help="also write the rows to this CSV file"),
    bs: int | None = typer.Option(None, help="batch size (default: 8 on a CPU, 256 on a GPU)"),
    trust: bool = typer.Option(False, help="allow loading a .pkl you did not create (runs its code)"),
    device: str = typer.Option("auto", help="auto, cpu, cuda (or cuda:N) or mps"),
    precision: str = typer.Option("auto", help="PyTorch models: auto (bf16 on a CUDA GPU, else float32), "
                                                "float32 or bf16"),
    decode_on_device: bool = typer.Option(False, "--decode-on-device",
                                          help="decode JPEGs where a torch model runs (nvJPEG on a GPU)"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none (on stderr)"),
) -> None:
    """Classify images, batched; prints label and probability per image."""
    from .predict import check_csv_target, check_predict_options, load_model
    from .predict import predict as predict_images

    with _user_errors():
        check_predict_options(top_k, bs)  # before the work, not after loading the model
        if csv_path is not None:
            check_csv_target(csv_path)  # before the work, not after it
        predictor = load_model(model, trust=trust, device=device, backend="torch" if decode_on_device else "auto",
                               precision=precision)
        if model.is_dir() and progress != "none":  # which of the run's models answers depends on the options
            typer.echo(f"model: {predictor.path}", err=True)
        result = predict_images(predictor, images, top_k=top_k, bs=bs, decode_on_device=decode_on_device,
                                progress=progress)
        if csv_path is not None:
            result.to_csv(csv_path)
    if as_json:
        typer.echo(json.dumps(result.rows, indent=1))
    else:
        for row in result.rows:
            others = ", ".join(f"{lab} {p:.3f}" for lab, p in row["top_k"][1:])
            typer.echo(f"{row['path']}\t{row['label']}\t{row['prob']:.3f}" + (f"\t({others})" if others else ""))
    for path, reason in result.skipped.items():
        typer.echo(f"skipped {path}: {reason}", err=True)
    if csv_path is not None:
        also = f" and {len(result.skipped)} skipped" if result.skipped else ""
        typer.echo(f"wrote {len(result.rows)} rows{also} to {csv_path}", err=True)


@app.command(epilog="Example: birdcls demo --out models/demo")
def demo(
    out: Path = typer.Option(Path("models/demo"), "--out", "-o", help="where the demo's data and run go"),
    progress: str = typer.Option("auto", help="auto, bars, lines or none"),
) -> None:
    """Offline end-to-end demo on scikit-learn's handwritten digits (about a minute on a 2-core CPU)."""
    from .demo import run_demo

    with _user_errors():
        summary = run_demo(out, progress=progress)
    typer.echo(f"demo done in {summary['seconds']}s: test accuracy {summary['test_accuracy']:.4f}; "
               f"everything is in {summary['out']}")


@app.command(epilog="Example: birdcls recipes")
def recipes() -> None:
    """List the shipped training recipes (use with `birdcls train --recipe NAME`)."""
    from .config import list_recipes

    for name, path in list_recipes().items():
        typer.echo(f"{name:<36} {_recipe_summary(path)}")


def _recipe_summary(path: Path) -> str:
    """A recipe file's opening comment up to the end of its first sentence (it may run over several lines)."""
    import re

    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
        end = re.search(r"\.(\s+(?=[A-Z])|$)", " ".join(words))  # "vs. cats" goes on: a sentence ends before a capital
        if end:
            return " ".join(words)[:end.start() + 1]
    return " ".join(words)


@app.command(epilog="Example: birdcls models   |   birdcls models --all --filter efficientnet")
def models(
    filter: str | None = typer.Option(None, help="only names containing this text"),
    all_names: bool = typer.Option(False, "--all", help="every accepted timm/torchvision name (no counts)"),
) -> None:
    """List architectures for `--arch`: the reports' small CNNs and common backbones, with size and parameters."""
    from .models.backbones import OFFLINE_WEIGHTS, describe_architectures, list_architectures

    def wanted(name: str) -> bool:
        return filter is None or filter.lower() in name.lower()

    if all_names:
        names = [name for name in list_architectures() if wanted(name)]
        for name in names:
            typer.echo(name + ("  (offline weights)" if name in OFFLINE_WEIGHTS else ""))
    else:
        rows = [row for row in describe_architectures() if wanted(row["arch"])]
        names = [row["arch"] for row in rows]
        if rows:
            typer.echo(f"{'arch':<24} {'input':<10} {'params':>12}  weights")
        for row in rows:
            typer.echo(f"{row['arch']:<24} {row['input']:<10} {row['params']:>12,}  {row['weights']}")
    if not names:
        hint = "" if all_names else "; --all lists every accepted name"
        typer.echo(f"no architecture name contains {filter!r}{hint}", err=True)


datasets_app = typer.Typer(cls=_OneLineUsageGroup,
                           help="The reports' datasets, imported or downloaded into train/val/test class folders.",
                           no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("get", epilog="Example: birdcls datasets get cifar10 data/cifar10 --from cifar-10-python.tar.gz")
def datasets_get(
    name: str = typer.Argument(..., help="cifar10, fashion-mnist, dogs-vs-cats or digits"),
    dest: Path = typer.Argument(..., help="output folder: DEST/{train,val,test}/<class>/"),
    source: Path | None = typer.Option(None, "--from", help="an archive or folder you already have (else download)"),
    split: str = typer.Option("full", help="cifar10: full (batches 1-4 train, 5 val) or report (1 train, 2 val)"),
    overwrite: bool = typer.Option(False, help="replace DEST if it exists"),
) -> None:
    """Import (--from) or download a dataset, verified, into the layout `birdcls train` reads."""
    from .data.sources import get_dataset

    with _user_errors():
        out = get_dataset(name, dest, source, split=split, overwrite=overwrite)
    info = json.loads((out / "dataset.json").read_text())
    counts = ", ".join(f"{split} {n}" for split, n in info.get("counts", {}).items())
    typer.echo(f"wrote {out}: {info['name']}, {counts} images (dataset.json says where from and how it was split)")


@datasets_app.command("list", epilog="Example: birdcls datasets list")
def datasets_list() -> None:
    """List the datasets `birdcls datasets get` knows."""
    from .data.sources import DATASETS, REMOTES

    for name in DATASETS:
        how = "download or --from" if name in REMOTES else ("bundled" if name == "digits" else "--from only (Kaggle login)")
        typer.echo(f"{name:<15} {how}")


def main() -> None:
    app(prog_name="birdcls")


if __name__ == "__main__":
    main()
