"""A stand-in for the `wandb` module when the official Sophia trainers run as a comparison
(scripts/dev/official_compare.sh): every wandb.log() call becomes one JSON line in the file named by
SGPT_WANDB_LOG, so the official trainers' own metrics (loss, lr, hessian_norm, win_rate, val loss)
are recorded without editing their code. Not used by sophiagpt."""
import json
import math
import os

_path = os.environ.get("SGPT_WANDB_LOG", "wandb_log.jsonl")


def _plain(v):
    try:
        v = v.item()  # torch / numpy scalars
    except AttributeError:
        pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def init(**kwargs):
    with open(_path, "a") as f:
        f.write(json.dumps({"init": {k: _plain(v) for k, v in (kwargs.get("config") or {}).items()}}) + "\n")


def log(data, step=None, **kwargs):
    rec = {k: _plain(v) for k, v in data.items()}
    if step is not None:
        rec["_step"] = step
    with open(_path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def finish(*args, **kwargs):
    pass
