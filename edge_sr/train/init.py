"""``--init CKPT``: start from other weights (e.g. ×2 -> ×4 with the body reused), reporting what loaded."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edge_sr.errors import CheckpointError
from edge_sr.models.checkpoint import has_edge_sr_metadata, load_state_dict_file
from edge_sr.models.detect import detect


@dataclass(frozen=True)
class InitReport:
    loaded: list[str]  # tensors copied from the checkpoint
    new: list[str]  # tensors kept at their fresh initialisation (absent, or another shape)
    ignored: list[str]  # checkpoint tensors the model has no use for


def init_from(model: nn.Module, path: str) -> InitReport:
    """Copy every tensor of ``path`` whose name and shape match into ``model``; the rest stay fresh.

    ``path`` is any checkpoint ``load_state_dict_file`` reads; a foreign one whose architecture is detected
    (:func:`edge_sr.models.detect.detect`) is first renamed to the zoo's keys (a BasicSR layout, say), so
    its tensors match by the zoo's names. An undetected one is matched by its own names.
    """
    state = load_state_dict_file(path)
    if not has_edge_sr_metadata(path):
        try:
            state = detect(state, path=path).state(state)
        except CheckpointError:  # not a zoo architecture: match by the file's own names
            pass
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    for k in loaded:
        own[k].copy_(state[k])
    new = sorted(set(own) - set(loaded))
    ignored = sorted(set(state) - set(loaded))
    return InitReport(sorted(loaded), new, ignored)
