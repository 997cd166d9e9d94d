"""Which weights a model path names: the hub snapshot commit, or a sha256 of a local weight index.

    weight_revision("meta-llama/Llama-3.1-8B-Instruct")  # {"source": "hub", "revision": commit}
    weight_revision("/models/llama")  # {"source": "local", "revision": sha256, "of": index file}
    describe(weight_revision(path))   # one line for report.md

A hub id is looked up in the local hub cache only (the snapshot that `refs/main` points to, the
one a model id loads): no network, so nothing waits on the hub. A local folder is
named by the sha256 of its weight index (model.safetensors.index.json, which lists every tensor
and its file) or, for a single-file model, of the model.safetensors header (every tensor's
name, shape and byte offsets): cheap for a 400 GB model, and any change of the weights' layout
or files changes it. Used by the generate stage (its done markers) and the judge (its records).
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from lcr.io import sha256_file

INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _safetensors_header_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
        (size,) = struct.unpack("<Q", head)
        return hashlib.sha256(head + f.read(size)).hexdigest()


def _local(folder: Path) -> dict:
    for name in INDEXES:
        if (folder / name).is_file():
            return {"source": "local", "model": str(folder), "revision": sha256_file(folder / name),
                    "of": name}
    single = folder / "model.safetensors"
    if single.is_file():
        return {"source": "local", "model": str(folder),
                "revision": _safetensors_header_sha256(single), "of": "model.safetensors header"}
    return {"source": "local", "model": str(folder), "revision": None,
            "detail": f"no weight index or model.safetensors in {folder}"}


def _hub(repo: str) -> dict:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json")
    except Exception as e:  # a broken cache must not stop a report
        return {"source": "hub", "model": repo, "revision": None,
                "detail": f"hub cache unreadable ({type(e).__name__})"}
    if isinstance(found, str):  # .../models--owner--name/snapshots/<commit>/config.json
        return {"source": "hub", "model": repo, "revision": Path(found).parent.name}
    return {"source": "hub", "model": repo, "revision": None,
            "detail": "not in the local hub cache"}


def weight_revision(path: str) -> dict:
    """The weights `path` (a local folder or a hub id) names, as a small JSON-able dict."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return _local(folder)
    if _HUB_ID.match(path):
        return _hub(path)
    return {"source": "unknown", "model": path, "revision": None,
            "detail": "neither a folder nor a hub id"}


def describe(w: dict | None) -> str:
    """One line: "hub snapshot <commit>", "sha256 <hash> of <index>", or why not known."""
    if not w:
        return "not recorded"
    if w.get("revision") is None:
        return f"not known ({w.get('detail', 'no revision')})"
    if w["source"] == "hub":
        return f"hub snapshot {w['revision']}"
    return f"sha256 {w['revision']} of {w.get('of', 'the weights')}"
