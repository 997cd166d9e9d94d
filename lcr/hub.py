"""The Hugging Face hub, asked once per process whether it answers, before anything waits on it.

    why = hub_offline()      # None: the hub answers; else why not (and lcr works offline)

huggingface_hub retries an unreachable host five times with backoff (about 25 s per file,
longer for a model and its tokenizer). One short probe first tells "no network" apart; lcr
then switches huggingface_hub (and transformers, which asks it) to offline mode, so files
already in the local cache are used and anything else fails at once, with the reason.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PROBE_S = 5.0  # seconds the probe waits for the hub to answer at all


@functools.cache
def hub_offline() -> str | None:
    """Why the hub cannot be used from here (HF_HUB_OFFLINE, or no answer), or None."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:  # any HTTP answer, even an error page, means the hub can be reached
        get_session().head(constants.ENDPOINT, timeout=PROBE_S)
    except Exception as e:  # DNS, refused, timed out, proxy: whatever the transport says
        constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub, transformers
        os.environ["HF_HUB_OFFLINE"] = "1"  # and by processes started from here
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{constants.ENDPOINT} does not answer ({reason[:160]})"
    return None


def is_local(name: str) -> bool:
    """A model or tokenizer named by a path, not a hub id ("org/name" or "name")."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).exists()
