#!/usr/bin/env bash
# The checks a lent GPU machine runs in one go: the CUDA variants of the
# tests, then the speed benchmark with VGG16 at 600x1000 (fp16 and bf16)
# and with the ResNet-50 FPN at 800x1333 (bf16), each one's output in $OUT.
# About 8 minutes on one H200 (tests ~2, each benchmark ~2, estimated), so
# that one device call fits in its 15 minutes.
#
#   bash benchmarks/gpu_check.sh wheels   # here: the packages that machine
#                                         # lacks, as wheels in .whl/
#   bash benchmarks/gpu_check.sh run      # there, carrying .whl
#
# That machine has torch, torchvision, scikit-image, matplotlib, tqdm,
# pytest and onnx, and no network: fire, visdom (and what it needs),
# torchnet and pycocotools travel as wheels for its Python 3.12.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels() {
    local platforms=""
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux1_x86_64; do
        platforms="$platforms --platform $p"
    done
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null ||
        echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp $platforms -d .whl \
        fire termcolor pycocotools 'tornado<6.6' jsonpatch jsonpointer \
        websocket-client || exit 1
    # sdists only: built here, pure Python
    python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl \
        visdom==0.2.4 torchnet || exit 1
    du -sh .whl
}

run() {
    local out=${OUT:-gpu_out}
    mkdir -p "$out"
    if [ -d .whl ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site
    fi
    export PYTHONUNBUFFERED=1
    { nvidia-smi; python3 -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())'; } \
        > "$out/machine.txt" 2>&1
    # A test module whose import needs a package not there (the notebook's
    # nbclient) is reported, not a stop: its tests have no CUDA variant.
    timeout 300 python3 -m pytest tests -q -k cuda -m 'not slow' \
        --continue-on-collection-errors -p no:cacheprovider \
        > "$out/cuda_tests.txt" 2>&1
    echo "cuda tests: exit $?; $(tail -n 1 "$out/cuda_tests.txt")"
    for amp in fp16 bf16; do
        timeout 200 python3 benchmarks/bench_speed.py --model vgg16 \
            --device cuda --amp "$amp" > "$out/bench_$amp.txt" 2>&1
        echo "bench_speed --amp=$amp: exit $?"
        cat "$out/bench_$amp.txt"
    done
    timeout 200 python3 benchmarks/bench_speed.py --model resnet50_fpn \
        --device cuda --amp bf16 --repeats 2 > "$out/bench_fpn.txt" 2>&1
    echo "bench_speed --model=resnet50_fpn: exit $?"
    cat "$out/bench_fpn.txt"
}

case "${1:-}" in
    wheels) wheels ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_check.sh wheels|run" >&2; exit 2 ;;
esac
