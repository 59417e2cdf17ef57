"""Training configuration: one typed set of defaults, YAML recipes, validation before any work.

Precedence is ``defaults < recipe file < explicit overrides`` (CLI flags or keyword arguments).
Unknown keys and out-of-range values are rejected with a message that shows the fix, e.g.
``'epochs' must be an int between 0 and 10000 (e.g. 'epochs=0' or 'epochs=auto'), got 'ten'``. The resolved config is written as
``config.yaml`` in every run directory.

Example:
    >>> cfg = resolve_config(recipe="demo", overrides={"epochs": 2})
    >>> cfg.epochs
    2
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import BirdclsError

__all__ = ["RECIPES_DIR", "TrainConfig", "list_recipes", "load_recipe", "resolve_config", "validate_config"]

RECIPES_DIR = Path(__file__).parent / "recipes"

DEVICES = ("auto", "cpu", "cuda", "mps")
_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("one_cycle", "constant", "triangle")
_NORMALIZE = ("model", "none", "raw255")
_MONITORS = ("valid_loss", "accuracy", "error_rate")


def check_device_name(device: str) -> tuple[str, str]:
    """``device`` split into its kind and GPU index (``cuda:1`` -> cuda, 1), or a one-line error. Training's
    config and predict accept the same names."""
    kind, colon, index = device.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise BirdclsError(f"'device' must be auto, cpu, cuda (or cuda:N) or mps, got {device!r}")
    return kind, index


def _opt(default: Any, doc: str, **rules: Any) -> Any:
    """A config field with its one-line meaning and its validation rules kept beside it."""
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass
class TrainConfig:
    """Every setting of a training run; each field's metadata holds its meaning and its valid range."""

    arch: str = _opt("tf_efficientnet_lite0", "(str) backbone: a timm or torchvision name; see `birdcls models`")
    weights: str | None = _opt(None, "(path) weights file for the backbone, for archs without offline weights")
    pretrained: bool = _opt(True, "(bool) start from ImageNet weights (False trains from scratch)")
    size: int = _opt(224, "(int) square input size in pixels", min=16, max=2048)
    bs: int = _opt(64, "(int) batch size", min=1, max=4096)
    epochs_head: int = _opt(10, "(int) head-only epochs with the body frozen (fit_one_cycle unless schedule says "
                            "otherwise)", min=0, max=10000)
    epochs: int | None = _opt(None, "(int) fine_tune epochs with the whole network unfrozen; auto = 0 for a pretrained "
                              "body (fine-tuning did not raise test accuracy in our measurements), 10 from scratch",
                              min=0, max=10000, auto=True)
    freeze_epochs: int | None = _opt(None, "(int) fine_tune's own frozen epochs before it unfreezes; auto = 0 after "
                                           "the head phase (the head is trained already), 1 without one (fastai's "
                                           "default)", min=0, max=10000, auto=True)
    lr: float = _opt(2e-3, "(float) base learning rate of both phases", min=1e-8, max=10.0)
    opt: str = _opt("adam", "(str) optimizer: adam (fastai's Adam) or sgd (with momentum)", choices=_OPTIMIZERS)
    nesterov: bool = _opt(False, "(bool) sgd: Nesterov momentum instead of fastai's heavy-ball momentum")
    momentum: float = _opt(0.9, "(float) SGD momentum", min=0.0, max=0.999)
    cycle_momentum: bool = _opt(True, "(bool) one_cycle also cycles momentum 0.95-0.85-0.95 (fastai's default); "
                                      "false keeps SGD's `momentum` fixed")
    bn_bias_lr_mult: float = _opt(1.0, "(float) from scratch: BatchNorm biases train at lr times this (the CIFAR-10 "
                                       "speed runs use 64)", min=1e-3, max=1e4)
    bn_bias_wd: bool = _opt(False, "(bool) with bn_bias_lr_mult: decay the BatchNorm biases too, by as much per step as "
                                   "the other weights (their wd is divided by the multiplier; airbench's setting)")
    whiten_bias_epochs: int | None = _opt(None, "(int) cifar_speedrun: the patch-whitening bias trains for this many "
                                                "epochs, then stays fixed; null = throughout", min=0, max=10000)
    schedule: str = _opt("one_cycle", "(str) one_cycle; constant (plain fit at lr, as the reports did); or, from "
                                      "scratch, triangle (airbench: linear from lr/5 to lr over 23%, then to 0.07 lr)",
                         choices=_SCHEDULES)
    lr_mult: float = _opt(100.0, "(float) fine_tune: the body's first layers get lr/lr_mult", min=1.0, max=1e6)
    wd: float | None = _opt(None, "(float) weight decay; null = fastai's default", min=0.0, max=10.0)
    train_bn: bool = _opt(True, "(bool) train BatchNorm layers while the body is frozen (fastai's default)")
    keep_bn_stats: bool = _opt(True, "(bool) fine_tune: the pretrained body's BatchNorm layers keep normalising with "
                                     "the statistics the head learned on (eval mode) while their weights train; "
                                     "false lets them follow each batch (fastai's way), which undoes the head")
    normalize: str = _opt("model", "(str) model: the backbone's mean/std; none: 0..1; raw255: raw 0..255 values",
                          choices=_NORMALIZE)
    shuffle: bool = _opt(True, "(bool) shuffle the training set every epoch")
    train_subset: int | None = _opt(None, "(int) use only this many training images (seeded); null = all",
                                    min=1, max=10**9)
    valid_subset: int | None = _opt(None, "(int) use only this many validation images (seeded)", min=1, max=10**9)
    mixed_precision: bool = _opt(True, "(bool) bf16/fp16 autocast when training on a GPU (ignored on CPU)")
    augment: bool = _opt(True, "(bool) augment every training batch on the device, as `augment_style` says")
    flip: bool = _opt(True, "(bool) random horizontal flips when augmenting (off for digits and text)")
    augment_style: str = _opt("full", "(str) full: aug_transforms' rotate, zoom, warp and lighting; light: flips and "
                                      "up-to-10% zoom-and-shift only; shift: flips and whole-pixel shifts of up to "
                                      "2 px, no resampling (what the CIFAR-10 speed runs use)",
                              choices=("full", "light", "shift"))
    lookahead: bool = _opt(False, "(bool) every 5 steps pull the weights toward their running average, harder as "
                                  "training ends, and finish on the average (airbench's lookahead)")
    tta: bool = _opt(False, "(bool) the model's predictions average each image and its mirror image (needs flip; "
                            "twice the inference cost); stored with the model, so evaluate, predict and every export "
                            "do the same")
    tta_shift: bool = _opt(False, "(bool) with tta: also average the image (and mirror) moved one pixel up-left and "
                                  "down-right, airbench's level-2 average (six passes: three times tta's cost)")
    label_smoothing: float = _opt(0.0, "(float) label smoothing of the cross-entropy loss", min=0.0, max=0.99)
    early_stopping: bool = _opt(True, "(bool) EarlyStoppingCallback on `monitor`")
    patience: int = _opt(3, "(int) EarlyStopping patience in epochs", min=1, max=10000)
    save_best: bool = _opt(True, "(bool) SaveModelCallback: keep and reload the best epoch")
    reduce_lr: bool = _opt(True, "(bool) ReduceLROnPlateau, scaled onto the one-cycle schedule")
    lr_patience: int = _opt(2, "(int) ReduceLROnPlateau patience in epochs", min=1, max=10000)
    lr_factor: float = _opt(10.0, "(float) ReduceLROnPlateau divides the lr by this", min=1.0, max=1e6)
    monitor: str = _opt("valid_loss", "(str) what the three callbacks watch", choices=_MONITORS)
    seed: int = _opt(42, "(int) random seed of weights init, shuffling and augmentation", min=0, max=2**32 - 1)
    device: str = _opt("auto", "(str) auto, cpu, cuda (or cuda:N) or mps", check=check_device_name)
    num_workers: int = _opt(-1, "(int) DataLoader worker processes; -1 = automatic", min=-1, max=64)
    top_losses: int = _opt(16, "(int) images in the top-losses gallery", min=0, max=400)
    fast_data: bool = _opt(True, "(bool) decode each image once into a cached uint8 store and augment whole batches "
                                 "on the device; false = fastai's per-image PIL pipeline")
    cache_features: bool = _opt(True, "(bool) head phase: compute the frozen body's features once (eval mode, no "
                                      "augmentation) and train the head on them")
    cache_max_gb: float = _opt(8.0, "(float) largest decoded-image store the fast path builds; bigger datasets use "
                                    "the plain path", min=0.0, max=1e4)
    cache_keep_gb: float = _opt(20.0, "(float) decoded-image stores kept on disk together; the ones used longest "
                                      "ago are removed beyond it", min=0.0, max=1e6)
    export_onnx: bool = _opt(True, "(bool) also write model.onnx into the run; `birdcls predict RUN` on a CPU then "
                                   "runs onnxruntime, about 4x faster than PyTorch there")
    export_int8: bool = _opt(True, "(bool) with export_onnx: also write model.int8.onnx (calibrated on training "
                                   "images), kept only if it stays within one point of float32 on val/; "
                                   "`birdcls predict RUN` on a CPU prefers it")
    channels_last: bool = _opt(True, "(bool) channels_last memory format for the network (faster convolutions)")
    deterministic: bool = _opt(True, "(bool) GPU: cuDNN's deterministic algorithms, so a seeded run repeats exactly; "
                                     "false lets cuDNN time its algorithms and keep the fastest")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """YAML with each key's meaning as a trailing comment, like the recipe files."""
        lines = ["# birdcls training config (resolved: defaults < recipe < flags)"]
        for f in fields(self):
            value = getattr(self, f.name)
            value = "auto" if value is None and f.metadata.get("auto") else yaml.safe_dump(value, default_flow_style=True)
            value = value.strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{f.name}: {value}  # {f.metadata['doc']}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return resolve_config(recipe=str(path))


_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).split("|")[0].strip()


def _coerce(name: str, value: Any) -> Any:
    """Check one value against its field's type and range; return it converted (int 3 -> float 3.0)."""
    f = _FIELDS[name]
    kind = _type_name(f)
    optional = "None" in str(f.type)
    if f.default is not None:
        example = f"{name}={f.default}"
    elif f.metadata["doc"].startswith("(path)"):
        example = f"{name}=models/{name}.pth"
    else:  # no default to show: a value in range, and the words the field also takes
        low = f.metadata.get("min", 1)
        example = f"{name}={low if kind == 'int' else float(low)}"
    if f.metadata.get("auto"):
        example += f"' or '{name}=auto"
    elif optional:
        example += f"' or '{name}=null"
    if value is None and optional:
        return None
    if f.metadata.get("auto") and isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, str) and value.strip().lower() in ("null", "none") and optional:
        if kind != "str" or "none" not in f.metadata.get("choices", ()):  # a str setting may have 'none' as a choice
            return None
    ok = True
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            value = value.lower() in ("true", "yes", "1")
        ok = isinstance(value, bool)
    elif kind == "int":
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                ok = False
        ok = ok and isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                ok = False
        ok = ok and isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif kind == "str":
        ok = isinstance(value, str) and value != ""
    rng = ""
    if "min" in f.metadata and "max" in f.metadata:
        rng = f" between {f.metadata['min']} and {f.metadata['max']}"
    if not ok:
        raise BirdclsError(f"'{name}' must be {'an' if kind == 'int' else 'a'} {kind}{rng} (e.g. '{example}'), got {value!r}")
    if "min" in f.metadata and not (f.metadata["min"] <= value <= f.metadata["max"]):
        raise BirdclsError(f"'{name}' must be{rng} (e.g. '{example}'), got {value!r}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise BirdclsError(f"'{name}' must be one of {', '.join(f.metadata['choices'])}, got {value!r}")
    if "check" in f.metadata:
        f.metadata["check"](value)
    return value


def _check_keys(values: dict[str, Any], source: str) -> None:
    for key in values:
        if not isinstance(key, str):
            raise BirdclsError(f"config key {key!r} in {source} is not a name: each line is 'key: value' with a "
                               f"setting's name as the key (e.g. 'epochs: 3')")
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(_FIELDS)}"
            raise BirdclsError(f"unknown config key '{key}' in {source}{hint}")


def list_recipes() -> dict[str, Path]:
    """The recipes shipped in the package, by name."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


class _RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (plain YAML keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)  # YAML merge keys ('<<: *defaults') first, as SafeLoader does
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise yaml.constructor.ConstructorError(None, None, "a key must be a setting's name",
                                                        key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(recipe: str | Path) -> dict[str, Any]:
    """Read a recipe by shipped name (``demo``) or by YAML file path; return its raw key/values."""
    shipped = list_recipes()
    path = shipped.get(str(recipe)) or Path(recipe)
    if not path.is_file():
        raise BirdclsError(
            f"recipe '{recipe}' is neither a shipped recipe ({', '.join(shipped)}) nor a YAML file: "
            "pass one of those names or a path to a .yaml file"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)
    except UnicodeDecodeError:
        raise BirdclsError(f"recipe {path} is not UTF-8 text: save it as UTF-8 (a recipe is a YAML file)") from None
    except yaml.YAMLError as exc:
        raise BirdclsError(f"recipe {path} is not valid YAML ({_yaml_problem(exc)}): fix the file") from None
    if data is None:  # an empty file (or only comments): the defaults
        data = {}
    if not isinstance(data, dict):
        raise BirdclsError(f"recipe {path} must be a mapping of 'key: value' lines, got {type(data).__name__}")
    _check_keys(data, str(path))
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, in one line: "found character '\\t' that cannot start any token, line 1,
    column 8" rather than only the parser's context ("while scanning for the next token")."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return str(exc).splitlines()[0]
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def resolve_config(recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Merge defaults < recipe < overrides, validate every value, and return the typed config.

    ``None`` values in ``overrides`` mean "not given" and do not override (CLI flags left unset).
    """
    merged: dict[str, Any] = {}
    if recipe is not None:
        merged.update(load_recipe(recipe))
        for name, value in merged.items():  # a bad value names the file it came from
            try:
                _coerce(name, value)
            except BirdclsError as exc:
                raise BirdclsError(f"recipe {recipe}: {exc}") from None
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_keys(given, "the overrides")
    merged.update(given)
    values = {name: _coerce(name, value) for name, value in merged.items()}
    cfg = TrainConfig(**values)
    _check_combinations(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """A TrainConfig built in Python, put through the checks a recipe's values get (``TrainConfig(lr=-1)``
    would otherwise train); returned with values converted as :func:`resolve_config` converts them."""
    cfg = TrainConfig(**{f.name: _coerce(f.name, getattr(cfg, f.name)) for f in fields(cfg)})
    _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: TrainConfig) -> None:
    """Settings that are valid alone but contradict each other."""
    if cfg.tta and not cfg.flip:
        raise BirdclsError("tta averages each image with its mirror image, but flip is false (mirrored images are "
                           "not the same class here): set tta=false, or flip=true")
    if cfg.tta_shift and not cfg.tta:
        raise BirdclsError("tta_shift extends tta's mirror average: set tta=true as well, or tta_shift=false")
    if cfg.nesterov and cfg.opt != "sgd":
        raise BirdclsError("nesterov applies to opt=sgd: set opt=sgd, or nesterov=false")
    if cfg.pretrained and cfg.schedule == "triangle":
        raise BirdclsError("schedule=triangle applies to training from scratch (fine_tune has its own schedule): "
                           "set pretrained=false, or schedule=one_cycle")
    if cfg.whiten_bias_epochs is not None and cfg.arch != "cifar_speedrun":
        raise BirdclsError(f"whiten_bias_epochs applies to cifar_speedrun's patch-whitening layer, which {cfg.arch} "
                           "does not have: set whiten_bias_epochs=null, or arch=cifar_speedrun")
    if cfg.bn_bias_wd and cfg.bn_bias_lr_mult == 1.0:
        raise BirdclsError("bn_bias_wd applies to the BatchNorm-bias group that bn_bias_lr_mult creates: set "
                           "bn_bias_lr_mult (e.g. 64), or bn_bias_wd=false")
    if cfg.pretrained and cfg.bn_bias_lr_mult != 1.0:
        raise BirdclsError("bn_bias_lr_mult applies to training from scratch: set pretrained=false, or "
                           "bn_bias_lr_mult=1")
