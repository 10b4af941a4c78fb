#!/usr/bin/env bash
# The lent GPU machine's script (issue 15; shared/notes/gpu.md, the device tool's README).
#
#   bash benchmarks/gpu.sh wheels        # HERE, before a GPU session: download the wheels into
#                                        # wheels/ops (call 1) and wheels/rest (call 2), git-ignored,
#                                        # and compute cp's factor cache into wheels/rest/cp-cache
#   bash benchmarks/gpu.sh install-ops   # DEVICE call 1 (carry wheels/ops): cuEquivariance's
#                                        # 45 MB ops wheel into /tmp/site, mace-torch into /tmp/mace-site
#   bash benchmarks/gpu.sh run           # DEVICE call 2 (carry wheels/rest), within the machine's warm
#                                        # window: the rest into /tmp/site, mlip itself, `pytest -m cuda`,
#                                        # then benchmarks/gpu.py; logs and JSON under $OUT
#   bash benchmarks/gpu.sh check         # HERE or CI: benchmarks/gpu.py --device cpu --quick
#
# The two cuEquivariance ops wheels (45 + 28.5 MB) exceed one call's 64 MiB, hence two calls.
# Environment: SITE (default /tmp/site), MACE_SITE (/tmp/mace-site), GPU_SECONDS (gpu.py's
# --max-seconds, default 270), PYTEST_SECONDS (default 150), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
MACE_SITE=${MACE_SITE:-/tmp/mace-site}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-out}
PIP_INSTALL=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)

# wheels: cp312 manylinux x86_64 (the lent machine's Python 3.12, torch 2.11 + CUDA 13)
OPS_WHEELS=(cuequivariance-ops-cu13==0.13.0)
MACE_WHEELS=(mace-torch==0.3.16 e3nn==0.4.4 torch-ema==0.3 prettytable==3.18.0 wcwidth==0.9.4 configargparse==1.9.0
             matscipy==1.3.1 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 orjson==3.13.0)
REST_WHEELS=(cuequivariance-ops-torch-cu13==0.13.0 cuequivariance==0.13.0 cuequivariance-torch==0.13.0 ase==3.29.0
             lmdb==3.0.0 vesin==0.6.2 platformdirs==4.14.8)

download() {  # download DIR NAME==VERSION...
  local dir=$1; shift
  mkdir -p "$dir"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dir" "$@"
}

case "${1:-}" in
  wheels)
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/wheels/' "$exclude" 2>/dev/null || echo '/wheels/' >>"$exclude"
    download wheels/ops "${OPS_WHEELS[@]}" || exit 1
    download wheels/ops/mace "${MACE_WHEELS[@]}" || exit 1
    download wheels/rest "${REST_WHEELS[@]}" || exit 1
    # cp's CP-ALS factors (minutes per L above 5 on one core), cached for the device's cp builds
    py=$PYTHON
    [ -x .venv/bin/python ] && py=.venv/bin/python
    echo "gpu.sh: computing cp's factor cache into wheels/rest/cp-cache (about 10 minutes on one core) ..."
    (cd benchmarks && MLIP_CACHE_DIR=../wheels/rest/cp-cache OMP_NUM_THREADS=1 ../"$py" -c "import gpu; gpu.warm_cp_cache()") || exit 1
    du -sh wheels/ops wheels/rest
    echo "carry wheels/ops in device call 1 (bash benchmarks/gpu.sh install-ops), wheels/rest in call 2 (run)"
    ;;
  install-ops)
    ls wheels/ops/*.whl >/dev/null 2>&1 || { echo "gpu.sh: no wheels/ops/*.whl (carry wheels/ops)"; exit 1; }
    "$PYTHON" "${PIP_INSTALL[@]}" --target "$SITE" wheels/ops/*.whl || exit 1
    "$PYTHON" "${PIP_INSTALL[@]}" --target "$MACE_SITE" wheels/ops/mace/*.whl || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    du -sh "$SITE" "$MACE_SITE"
    ;;
  run)
    mkdir -p "$OUT"
    ls wheels/rest/*.whl >/dev/null 2>&1 || { echo "gpu.sh: no wheels/rest/*.whl (carry wheels/rest)"; exit 1; }
    [ -d "$SITE/cuequivariance_ops" ] || echo "gpu.sh: WARNING: $SITE has no cuequivariance_ops (call 1 not run on" \
      "this machine?): the cuequivariance engine falls back to its naive torch code"
    "$PYTHON" "${PIP_INSTALL[@]}" --target "$SITE" wheels/rest/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MLIP_CACHE_DIR="$PWD/wheels/rest/cp-cache"
    # mlip itself: an editable install (setuptools is there); else a tree of links with the layout
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1; then
      mkdir -p /tmp/mlip-src/mlip
      for f in mlip/*; do ln -sfn "$PWD/$f" /tmp/mlip-src/mlip/; done
      for d in kernels datasets calculators; do ln -sfn "$PWD/$d" /tmp/mlip-src/mlip/$d; done
      export PYTHONPATH="/tmp/mlip-src:$PYTHONPATH"
    fi
    "$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import torch, e3nn, mlip
from mlip.kernels.tp import cueq
print("device", torch.cuda.get_device_name(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("e3nn", e3nn.__version__, "mlip", mlip.__file__, "cuequivariance ops:", cueq.cuda_ops_available())
EOF
    timeout "${PYTEST_SECONDS:-150}" "$PYTHON" -m pytest tests -m cuda -q -n 4 --continue-on-collection-errors \
      -p no:cacheprovider 2>&1 | tee "$OUT/pytest-cuda.txt" | tail -40
    echo "pytest -m cuda: exit ${PIPESTATUS[0]}"
    "$PYTHON" benchmarks/gpu.py --out "$OUT/gpu.json" --no-readme --mace-path "$MACE_SITE" \
      --max-seconds "${GPU_SECONDS:-270}" 2>&1 | tee "$OUT/gpu-log.txt" | grep -v "^\[" | tail -80
    echo "gpu.py: exit ${PIPESTATUS[0]}"
    ls -la "$OUT"
    ;;
  check)
    py=$PYTHON
    [ -x .venv/bin/python ] && py=.venv/bin/python
    "$py" benchmarks/gpu.py --device cpu --quick --no-readme --out "${TMPDIR:-/tmp}/gpu-quick.json" "${@:2}"
    ;;
  *)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
