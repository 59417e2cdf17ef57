"""The test-set report: metrics, confusion matrix, training curves and a top-losses gallery.

``evaluate`` works on any labelled folder (one sub-folder per class) with any model that
:func:`birdcls.predict.load_model` loads, and is also what ``train`` runs on ``test/`` at the end.

Example:
    >>> report = evaluate("models/birds", "data/birds/test")
    >>> report["test_accuracy"]
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from ._io import check_writable, is_within, save_figure_atomic, write_json_atomic, write_text_atomic
from ._text import middle_cut, name_list
from .data.folders import SPLIT_NAMES, VAL_NAMES, class_key, list_labelled_images, unknown_classes
from .errors import BirdclsError, check_int
from .predict import Predictor, load_model, predict

__all__ = ["REPORT_FILES", "evaluate", "evaluate_predictor", "is_report_folder", "mistakes_line", "most_confused",
           "plot_confusion_matrix", "plot_curves", "plot_top_losses", "report_lines"]


def _labelled_dir(path: Path) -> Path:
    """Accept a split folder (``test/``) or a dataset root, whose ``test/`` is then used (no val/ needed)."""
    if (path / "test").is_dir() and (path / "train").is_dir():
        return path / "test"
    return path


def _labelled_images(labelled_dir: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """``labelled_dir``'s images by class and its non-image files; a folder without images is an error."""
    by_class, not_images = list_labelled_images(labelled_dir)
    if not any(by_class.values()):
        raise BirdclsError(f"{labelled_dir} holds no images: put images in {labelled_dir}/<class>/")
    return by_class, not_images


#: Up to this many classes each cell of the confusion matrix shows its number and the figure grows with the
#: classes; beyond, it stays this many inches a side and its labels shrink to fit.
_ANNOTATED_CLASSES = 30
_MAX_SIDE = 0.45 * _ANNOTATED_CLASSES + 2.5


def plot_confusion_matrix(cm: np.ndarray, classes: list[str], dest: Path) -> Path:
    """Counts and row-normalised (recall) side by side, each cell numbered. Past 30 classes the numbers would not
    fit: only the normalised matrix is drawn, at a fixed size and a higher resolution, with labels small enough
    to fit (grown with the classes as below 30, a 200-class matrix, a bird-species dataset, was an 18,600 x
    9,250 px image that took 71 s and 4.6 GB of memory to draw); ``most_confused`` lists the mistakes."""
    from ._plots import figure

    n = len(classes)
    matrix_side = min(max(4.0, 0.45 * n + 2.5), _MAX_SIDE)
    label_pt = min(10.0, max(2.0, 0.8 * 72 * (matrix_side - 2.5) / n))  # 80% of a row's height, in points
    annotated = n <= _ANNOTATED_CLASSES
    labels = [middle_cut(name) for name in classes]  # a 200-character name would push the matrix off its figure
    longest = max(map(len, labels))
    side = matrix_side + 0.07 * max(0, longest - 10) * label_pt / 10  # room for long names beside the matrix
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    panels = [(cm, "counts", "d"), (norm, "normalised by true class", ".2f")][0 if annotated else 1:]
    fig = figure(figsize=(len(panels) * side + 1, side))
    for ax, (mat, title, fmt) in zip(fig.subplots(1, len(panels), squeeze=False).flat, panels):
        ax.imshow(mat, cmap="Blues", vmin=0, vmax=mat.max() if mat.max() > 0 else 1, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks(range(n), labels, rotation=90 if n > 6 or longest > 10 else 0, fontsize=label_pt)
        ax.set_yticks(range(n), labels, fontsize=label_pt)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        if annotated:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=8,
                            color="white" if mat[i, j] > 0.6 * mat.max() else "black")
    save_figure_atomic(dest, fig, tight=True, dpi=100 if annotated else 200)
    return dest


def most_confused(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` most frequent mistakes, largest first: which class was taken for which, how often. With many
    classes this is what a confusion matrix is read for, and it is easier to read as a list."""
    pairs = [(int(cm[i, j]), classes[i], classes[j]) for i, j in zip(*np.nonzero(cm)) if i != j]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [{"actual": actual, "predicted": predicted, "count": count} for count, actual, predicted in pairs[:top]]


#: Past this many classes ``birdcls evaluate`` prints the weakest ones only (metrics.json has every class).
_LISTED_CLASSES = 20


def report_lines(report: dict[str, Any]) -> list[str]:
    """What ``birdcls evaluate`` prints of a report: accuracy, each class's scores (past 20 classes, the 20 with
    the lowest F1: a 200-species report would scroll its summary off the screen), the most frequent mistakes
    and where the report went."""
    per_class, absent = report["per_class"], set(report["classes_absent"])
    lines = [f"accuracy {report['test_accuracy']:.4f} on {report['n_test']} images, macro F1 {report['macro_f1']:.4f}"]
    many = len(per_class) > _LISTED_CLASSES
    listed = list(per_class)
    if many:  # the weakest scored classes; the absent ones are named together below
        scored = [name for name in per_class if name not in absent]
        listed = sorted(scored, key=lambda name: (per_class[name]["f1"], name))[:_LISTED_CLASSES]
        lines.append(f"the {len(listed)} classes with the lowest F1 (all {len(per_class)} are in metrics.json):")
    width = max([20, *(len(middle_cut(name)) for name in listed)])  # one column, whatever the names' lengths
    for name in listed:
        shown = f"{middle_cut(name):<{width}}"
        if name in absent:
            lines.append(f"  {shown} (no images of this class here)")
            continue
        row = per_class[name]
        lines.append(f"  {shown} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}  "
                     f"n={row['support']}")
    if absent and many:
        lines.append(f"no images here of {len(absent)} class(es): {name_list(sorted(absent), 10)}")
    lines += mistakes_line(report)
    if "report_dir" in report:
        lines.append(f"wrote the report to {report['report_dir']} (metrics.json, confusion matrix, top losses, "
                     "predictions)")
    return lines


def mistakes_line(report: dict[str, Any], top: int = 5) -> list[str]:
    """The report's most frequent mistakes as one line (none when there were none), for evaluate's and train's
    closing lines."""
    mistakes = report.get("most_confused", [])[:top]
    if not mistakes:
        return []
    return ["most confused (actual -> predicted): "
            + ", ".join(f"{m['actual']} -> {m['predicted']} ({m['count']})" for m in mistakes)]


def plot_top_losses(items: list[dict[str, Any]], dest: Path) -> Path:
    """A gallery of the worst test images: actual / predicted / probability / loss under each."""
    from ._plots import contact_sheet

    cells = [(it["path"], f"{it['actual']} -> {it['predicted']}\np={it['prob']:.2f} loss={it['loss']:.2f}",
              it["actual"] != it["predicted"]) for it in items]
    return contact_sheet(cells, dest, "top losses (actual -> predicted)", empty="no test images")


def plot_curves(history: list[dict[str, Any]], dest: Path) -> Path:
    """Loss and accuracy per epoch over both phases, with the phase boundaries marked."""
    from ._plots import figure

    fig = figure(figsize=(11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    x = np.arange(1, len(history) + 1)
    for key, ax, style in (("train_loss", ax_loss, "-o"), ("valid_loss", ax_loss, "-s"), ("accuracy", ax_acc, "-o")):
        ys = [row.get(key, np.nan) for row in history]
        ax.plot(x, ys, style, label=key, markersize=3)
    for i in range(1, len(history)):
        if history[i]["phase"] != history[i - 1]["phase"] or history[i].get("frozen") != history[i - 1].get("frozen"):
            for ax in (ax_loss, ax_acc):
                ax.axvline(i + 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax_loss.set_title("loss")
    ax_acc.set_title("validation accuracy")
    phases = list(dict.fromkeys(row["phase"] for row in history))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch" + (f" ({', then '.join(phases)})" if len(phases) > 1 else f" ({phases[0]})"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.5
        ax.legend()
        ax.grid(alpha=0.3)
    save_figure_atomic(dest, fig, tight=True, dpi=100)
    return dest


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=list(range(len(classes))), zero_division=0)
    return {name: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4),
                   "support": int(n[i])} for i, name in enumerate(classes)}


def evaluate_predictor(model: Predictor, labelled_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       top_losses: int = 16, bs: int | None = None, progress: str = "none",
                       seen_in_training: str | None = None) -> dict[str, Any]:
    """Predict every image of ``labelled_dir/<class>/`` and write the report into ``out_dir``; ``progress``
    as in :func:`birdcls.predict.predict`; ``seen_in_training`` (see :func:`trained_on`) goes into the report."""
    from sklearn.metrics import confusion_matrix

    check_int(top_losses, "top_losses", 0)
    labelled_dir, out_dir = _labelled_dir(Path(labelled_dir)), Path(out_dir)
    by_class, not_images = _labelled_images(labelled_dir)
    unknown = unknown_classes(by_class, model.classes)
    if unknown:
        raise BirdclsError(f"{labelled_dir} has class folder(s) {', '.join(unknown)} that the model does not know "
                           f"(it knows {', '.join(model.classes)}): remove them or train with them")
    paths = [p for files in by_class.values() for p in files]
    label_of = {str(p): c for c, files in by_class.items() for p in files}
    result = predict(model, paths, top_k=min(3, len(model.classes)), bs=bs, progress=progress)
    index = {class_key(c): i for i, c in enumerate(model.classes)}
    y_true = np.array([index[class_key(label_of[r["path"]])] for r in result.rows])
    y_pred = result.probs.argmax(axis=1)
    true_prob = result.probs[np.arange(len(y_true)), y_true]
    losses = -np.log(np.clip(true_prob, 1e-12, None))
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(model.classes))))
    per_class = _per_class(y_true, y_pred, model.classes)
    present = [c for c in model.classes if per_class[c]["support"] > 0]
    report = {
        "test_accuracy": round(float((y_true == y_pred).mean()), 6),
        "test_loss": round(float(losses.mean()), 6),
        "n_test": len(y_true),
        "classes": list(model.classes),
        "macro_f1": round(float(np.mean([per_class[c]["f1"] for c in present])), 4),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm, model.classes),
        "skipped_unreadable": result.skipped,
        "skipped_non_images": len(not_images),
        "classes_absent": [c for c in model.classes if c not in present],
        "evaluated_on": str(labelled_dir),
        **({"seen_in_training": seen_in_training} if seen_in_training else {}),
        **({"model": str(model.path)} if model.path else {}),
        **({"precision": model.precision} if model.device is not None else {}),  # a PyTorch model's autocast
    }
    worst = np.argsort(-losses)[:top_losses]
    gallery = [{"path": result.rows[i]["path"], "actual": model.classes[y_true[i]], "predicted": model.classes[y_pred[i]],
                "prob": float(result.probs[i, y_pred[i]]), "loss": float(losses[i])} for i in worst]
    with _staged_report(Path(out_dir)) as staging:
        plot_confusion_matrix(cm, model.classes, staging / "confusion_matrix.png")
        plot_top_losses(gallery, staging / "top_losses.png")
        _write_predictions(result.rows, [model.classes[i] for i in y_true], losses, staging / "predictions.csv")
        write_json_atomic(staging / "metrics.json", report)
    return report


@contextmanager
def _staged_report(out_dir: Path) -> Iterator[Path]:
    """A hidden folder in ``out_dir`` to write a report's files into; on success they are moved into
    ``out_dir`` together (metrics.json last), so an interrupted evaluation leaves the previous report whole
    instead of new plots beside old metrics. The folder is removed either way."""
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report.", suffix=".partial", dir=out_dir))
    try:
        yield staging
        for name in sorted(p.name for p in staging.iterdir() if p.name != "metrics.json") + ["metrics.json"]:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_predictions(rows: list[dict], actual: list[str], losses: np.ndarray, dest: Path) -> None:
    """``actual``: each row's class as the model names it, so that a right answer reads as one even where the
    folder spells the name otherwise (see :func:`birdcls.data.folders.class_key`)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "actual", "predicted", "prob", "loss"])
    for row, label, loss in zip(rows, actual, losses):
        writer.writerow([row["path"], label, row["label"], row["prob"], round(float(loss), 6) + 0.0])
    write_text_atomic(dest, buf.getvalue())


def evaluate(model: str | os.PathLike | Predictor, data: str | os.PathLike, out: str | os.PathLike | None = None,
             trust: bool = False, device: str = "auto", top_losses: int = 16, bs: int | None = None,
             progress: str = "none", precision: str = "auto") -> dict[str, Any]:
    """Re-run the test report for ``model`` (a run directory or export) on a labelled folder.

    ``data`` is a folder with one sub-folder per class, or a split dataset whose ``test/`` is used.
    The report goes to ``out`` (default: :func:`default_report_dir`); ``report_dir`` in the returned
    report says where. ``precision``: as :func:`~birdcls.predict.load_model`'s (bf16 on a CUDA GPU by default).
    """
    data = Path(data)
    if not data.is_dir():
        raise BirdclsError(f"{data} is not a folder: pass a folder with one sub-folder of images per class")
    _labelled_images(_labelled_dir(data))  # before loading the model (seconds for a pkl)
    if out is not None:
        _check_report_dir(Path(out), data)
    predictor = model if isinstance(model, Predictor) else load_model(model, trust=trust, device=device, int8=False,
                                                                       precision=precision)
    if out is None:
        out = default_report_dir(model if not isinstance(model, Predictor) else predictor.path, data)
    seen = trained_on(predictor.path, _labelled_dir(data)) if predictor.path else None
    if seen:  # said before the work, from Python as from the command line; the report keeps it too
        print(f"note: {seen}", file=sys.stderr, flush=True)
    made = [p for p in (Path(out), *Path(out).absolute().parents) if not p.exists()]  # out first, then parents
    check_writable(Path(out) / "metrics.json")  # before the predictions, not after them
    try:
        report = evaluate_predictor(predictor, data, out, top_losses=top_losses, bs=bs, progress=progress,
                                    seen_in_training=seen)
    except BaseException:  # a refusal or Ctrl-C leaves no empty report folders in the way of the next try
        with suppress(OSError):
            for folder in made:
                folder.rmdir()  # fails, and stops, at the first that is not empty
        raise
    return {**report, "report_dir": str(out)}


def trained_on(model: Path, labelled_dir: Path) -> str | None:
    """Why ``labelled_dir``'s score would not be a test score (None when nothing says so): it is the train/
    or val/ split of the dataset the run trained on, or the folder that dataset was split from (70% of it
    trained on). Known for a run folder and the files in it, from its metrics.json and the dataset's split.json."""
    import json

    run = model if model.is_dir() else model.parent
    try:
        root = Path(json.loads((run / "metrics.json").read_text())["data_root"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    here = labelled_dir.resolve()
    if here.parent == root and here.name in ("train", *VAL_NAMES):
        return (f"{labelled_dir} is the {here.name}/ split this model trained on, so its score is not a test score: "
                f"evaluate {root / 'test'}")
    try:
        source = json.loads((root / "split.json").read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    if source and Path(source) == here:
        return (f"{labelled_dir} is the folder this model's dataset was split from, most of it trained on, so its "
                f"score is not a test score: evaluate {root / 'test'}")
    return None


def _check_report_dir(out: Path, data: Path) -> None:
    """Refuse a report folder whose files the report would replace or mix with: a file, a training run (its own
    test report and metrics.json, which export and resume read), or a place inside the dataset."""
    if out.exists() and not out.is_dir():
        raise BirdclsError(f"-o {out} is a file: choose a folder for the report")
    if (out / "config.yaml").is_file():
        raise BirdclsError(f"-o {out} is a training run: its report is the run's own; choose a new folder "
                           "(by default the report goes to RUN/eval-<data>)")
    if is_within(out, data):
        raise BirdclsError(f"-o {out} is inside the dataset {data}: put the report elsewhere")
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if taken and not is_report_folder(out):
        raise BirdclsError(f"-o {out} holds {', '.join(taken)} that evaluate did not write: the report would replace "
                           "them; choose a new folder for the report")


#: What a report folder holds; evaluate replaces them only in a folder that holds an earlier report.
REPORT_FILES = ("metrics.json", "confusion_matrix.png", "top_losses.png", "predictions.csv")


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a report that evaluate wrote: its metrics.json names what it evaluated, and it is
    not a training run (whose metrics.json, the test report's, does too) nor a copy of one."""
    import json

    if (folder / "config.yaml").exists() or (folder / "model.pkl").exists():
        return False
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        return "evaluated_on" in metrics and "train_seconds" not in metrics  # train's has both
    except (OSError, ValueError, TypeError):
        return False


def default_report_dir(model: str | os.PathLike | None, data: str | os.PathLike) -> Path:
    """Where ``evaluate`` writes when not told: a folder beside the model named after the model file and the
    data, so reports of different exports or datasets never overwrite each other. A run folder's report goes
    inside it (``RUN/eval-dvc-test``); a model file's beside it (``exp/eval-m-int8-onnx-dvc-test`` for
    ``exp/m.int8.onnx``). A split dataset's folder is named with its dataset (``dvc-test``, not ``test``)."""
    folder = _labelled_dir(Path(data)).resolve()
    name = f"{folder.parent.name}-{folder.name}" if folder.name in SPLIT_NAMES else folder.name
    if model is None:
        return Path(f"eval-{name}")
    model = Path(model)
    if model.is_dir():
        return model / f"eval-{name}"
    return model.parent / f"eval-{model.name.replace('.', '-')}-{name}"
