# Source on the GPU machine after setup.sh: the installed packages and a compile cache that
# every engine of the session shares (a warm start takes ~35-60 s instead of ~90 s).
export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1
export VLLM_CACHE_ROOT=/tmp/vcache PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
