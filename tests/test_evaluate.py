"""The test report's parts that do not need a model: the confusion matrix plot at any number of classes, the
list of most frequent mistakes, and what `birdcls evaluate` prints of a report."""

import numpy as np
from PIL import Image

from birdcls.evaluate import most_confused, plot_confusion_matrix, report_lines


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.diag(rng.integers(5, 20, n)) + rng.integers(0, 2, (n, n))


def test_most_confused_lists_the_largest_mistakes_first_and_never_a_right_answer():
    classes = ["cardinal", "jay", "parrot"]
    cm = np.array([[9, 0, 1], [3, 7, 0], [1, 1, 8]])
    assert most_confused(cm, classes) == [
        {"actual": "jay", "predicted": "cardinal", "count": 3},
        {"actual": "cardinal", "predicted": "parrot", "count": 1},  # ties: by actual, then predicted
        {"actual": "parrot", "predicted": "cardinal", "count": 1},
        {"actual": "parrot", "predicted": "jay", "count": 1},
    ]
    assert most_confused(cm, classes, top=1) == [{"actual": "jay", "predicted": "cardinal", "count": 3}]
    assert most_confused(np.diag([4, 5, 6]), classes) == []


def test_the_confusion_matrix_stops_growing_past_30_classes(tmp_path):
    """Grown with the classes, a 200-class matrix was 18,600 px wide; past 30 classes the figure keeps one size
    (one normalised panel, small labels) whatever the count."""
    sizes = {}
    for n in (3, 30, 40, 60):
        dest = plot_confusion_matrix(_matrix(n), [f"species_{i:03d}" for i in range(n)], tmp_path / f"cm{n}.png")
        sizes[n] = Image.open(dest).size
    assert sizes[3][0] > 2 * sizes[3][1]  # counts and normalised side by side
    assert sizes[30][0] > 2 * sizes[30][1] > 2_000
    assert sizes[40] == sizes[60] and max(sizes[60]) <= 3_600  # one panel, the same size for 40 and 60 classes
    assert abs(sizes[60][0] - sizes[60][1]) < 0.2 * sizes[60][0]


def _report(n: int, absent: tuple[str, ...] = ()) -> dict:
    names = [f"c{i:02d}" for i in range(n)]
    per_class = {name: {"precision": 1.0, "recall": 1.0, "f1": round(1 - i / 100, 4), "support": 3}
                 for i, name in enumerate(names)}
    for name in absent:
        per_class[name] = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    return {"test_accuracy": 0.9, "n_test": 3 * n, "macro_f1": 0.88, "per_class": per_class,
            "classes_absent": list(absent), "report_dir": "r",
            "most_confused": [{"actual": "c01", "predicted": "c02", "count": 2}]}


def test_evaluate_prints_every_class_of_a_small_report_in_order():
    lines = report_lines(_report(3, absent=("c01",)))
    assert lines[0] == "accuracy 0.9000 on 9 images, macro F1 0.8800"
    assert [line.split()[0] for line in lines[1:4]] == ["c00", "c01", "c02"]
    assert lines[2].endswith("(no images of this class here)")
    assert lines[4] == "most confused (actual -> predicted): c01 -> c02 (2)"
    assert lines[5].startswith("wrote the report to r ")


def test_evaluate_prints_the_weakest_20_of_many_classes():
    lines = report_lines(_report(25, absent=("c03",)))
    assert lines[1] == "the 20 classes with the lowest F1 (all 25 are in metrics.json):"
    listed = [line.split()[0] for line in lines[2:22]]
    assert listed == [f"c{i:02d}" for i in range(24, 4, -1)]  # lowest F1 first; the absent class is not scored
    assert lines[22] == "no images here of 1 class(es): c03"


def test_class_names_too_long_for_the_layout_are_drawn_without_a_warning(tmp_path):
    """tight_layout gives up on labels longer than the figure (and warns on stderr); the image is cut to what
    was drawn instead, every label whole."""
    import warnings

    names = [f"{'very ' * 40}long name {i}" for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dest = plot_confusion_matrix(_matrix(3), names, tmp_path / "cm.png")
    width, height = Image.open(dest).size
    assert width < 1_500 and height < 1_000  # names cut in the middle: the matrices keep their size


def test_long_class_names_are_cut_in_the_middle():
    from birdcls._text import middle_cut

    assert middle_cut("jay") == "jay"
    cut = middle_cut("very " * 40 + "long name 0")
    assert len(cut) == 32 and cut.startswith("very very very") and cut.endswith("long name 0") and "…" in cut


def test_class_names_match_however_their_accents_are_encoded(trained_run, tiny_data, tmp_path):
    """A folder copied from a Mac spells "é" as e + a combining accent where the run's folders had one code point:
    the same class, not one the model does not know. (The shared run's ONNX export, its class "jay" renamed.)"""
    import csv
    import json
    import shutil
    import unicodedata

    import onnx

    from birdcls.data.folders import unknown_classes
    from birdcls.evaluate import evaluate

    composed = unicodedata.normalize("NFC", "Geai é bleu")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed and unknown_classes({decomposed: [tmp_path]}, [composed]) == []
    proto = onnx.load(str(trained_run.run_dir / "model.onnx"))
    meta = next(p for p in proto.metadata_props if p.key == "birdcls")
    info = json.loads(meta.value)
    info["classes"] = [composed if c == "jay" else c for c in info["classes"]]
    meta.value = json.dumps(info)
    onnx.save(proto, str(tmp_path / "m.onnx"))
    mac = tmp_path / "from-a-mac"
    shutil.copytree(tiny_data / "test" / "jay", mac / decomposed)
    shutil.copytree(tiny_data / "test" / "parrot", mac / "parrot")
    report = evaluate(tmp_path / "m.onnx", mac, out=tmp_path / "report")
    assert report["n_test"] == 8 and report["per_class"][composed]["support"] == 4
    with (tmp_path / "report" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["actual"] for r in rows} == {composed, "parrot"}  # named as the model names them
    assert sum(r["actual"] == r["predicted"] for r in rows) == round(report["test_accuracy"] * 8)


def test_evaluate_prints_the_scores_in_one_column_whatever_the_names_lengths():
    report = _report(3)
    long_name = "species with a name far longer than twenty letters, " * 2
    report["per_class"] = {"jay": report["per_class"]["c00"], long_name: report["per_class"]["c01"]}
    rows = [line for line in report_lines(report) if "precision" in line]
    assert len(rows) == 2 and len({line.index("precision") for line in rows}) == 1
    assert "…" in rows[1] and len(rows[1]) < 100  # a long name is cut in the middle, as on the plots


def test_a_figure_tight_layout_cannot_fit_is_cut_to_what_was_drawn(tmp_path):
    """Labels longer than the figure: tight_layout gives up (with a warning on stderr); the saved image then
    takes in the whole label instead. A layout that fits is saved at the figure's own size."""
    import warnings

    from birdcls._io import save_figure_atomic
    from birdcls._plots import figure

    for name, label in (("long.png", "x" * 300), ("short.png", "jay"), ("emoji.png", "\N{BIRD} jay")):
        fig = figure(figsize=(2, 2))
        fig.subplots().set_yticks([0], [label])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            save_figure_atomic(tmp_path / name, fig, tight=True, dpi=50)
    assert Image.open(tmp_path / "long.png").size[0] > 500  # the whole label, not the figure's 100 px
    assert Image.open(tmp_path / "short.png").size == (100, 100)
    assert Image.open(tmp_path / "emoji.png").size == (100, 100)  # a glyph the font lacks is no layout failure
