"""Loaded by Python at start-up when scripts/dev/official_shim is on PYTHONPATH (scripts/dev/official_compare.sh
runs the official Sophia trainer that way). With SGPT_OFFICIAL_SEED=N set, torch.manual_seed(s) seeds
s + N, so the official trainer, whose seed is fixed in its code (torch.manual_seed(2099)), can be run
with other seeds without editing it. Without the variable nothing is changed. Not used by sophiagpt."""
import os

if os.environ.get("SGPT_OFFICIAL_SEED"):
    import torch

    _offset = int(os.environ["SGPT_OFFICIAL_SEED"])
    _manual_seed = torch.manual_seed

    def _offset_manual_seed(seed):
        return _manual_seed(int(seed) + _offset)

    torch.manual_seed = _offset_manual_seed
