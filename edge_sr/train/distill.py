"""Knowledge distillation (a recipe's ``distill:`` section): a trained teacher guides the student.

The loss of a step, every term on the same (augmented) LR batch:

    gt_weight · L(student(lr), hr)
  + output_weight · L(student(lr), teacher(lr))
  + feature_weight · mean over pairs of AT(student feature, teacher feature)

``L`` is the recipe's loss (L1 or Charbonnier). ``AT`` is attention transfer (Zagoruyko & Komodakis, ICLR
2017): each feature map (N, C, H, W) becomes a spatial map, the channel mean of its squares, L2-normalised over
the H·W positions, and the term is the mean L2 distance between the student's and the teacher's maps. It has no
parameters, so a 16-channel student block can follow a 32-channel teacher block with nothing to train beside
the student and nothing extra to checkpoint. Feature pairs name modules (``model.named_modules()``), e.g.
``[backbone.2, backbone.5]`` for ECBSR-M4C16 after ECBSR-M10C32; both outputs must have the same H, W.

The teacher is any checkpoint :func:`edge_sr.models.load_checkpoint` reads (an edge-sr file, or a foreign one
recognised from its keys), of the student's scale; it runs in eval mode without gradients, and in its fused
deploy form (:func:`edge_sr.reparam.reparameterize`) when no feature of it is named (the same function,
fewer MACs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_sr.errors import ConfigError


@dataclass
class DistillConfig:
    """Distillation from ``teacher`` (off when None)."""

    teacher: str | None = None  # checkpoint of the teacher (same scale as the student)
    teacher_model: str | None = None  # zoo name, for foreign weights the detector cannot name alone
    gt_weight: float = 1.0  # weight of the ground-truth term
    output_weight: float = 1.0  # weight of the teacher-output term
    features: list[list[str]] = field(default_factory=list)  # [student module, teacher module] pairs
    feature_weight: float = 0.0  # weight of the attention-transfer term


def attention_map(f: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H·W): the channel mean of the squared features, L2-normalised per sample."""
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over the batch of the L2 distance between the two attention maps."""
    return (attention_map(student) - attention_map(teacher)).norm(dim=1).mean()


class _Taps:
    """Forward hooks that keep the latest output of each named module."""

    def __init__(self, model: nn.Module, names: list[str], role: str) -> None:
        modules = dict(model.named_modules())
        self.out: dict[str, Tensor] = {}
        for name in names:
            if name not in modules or not name:
                known = ", ".join(n for n, _ in model.named_children())
                raise ConfigError(
                    "distill.features", f"the {role} has no module {name!r} (its top-level modules: {known})"
                )
            modules[name].register_forward_hook(self._keep(name))

    def _keep(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            if not isinstance(output, Tensor) or output.dim() != 4:
                raise ConfigError(
                    "distill.features", f"module {name!r} does not output one (N, C, H, W) tensor"
                )
            self.out[name] = output

        return hook


class Distiller:
    """The teacher and the feature taps of one run; :meth:`loss` is the step's whole loss."""

    def __init__(self, cfg: DistillConfig, student: nn.Module, *, scale: int, device: torch.device) -> None:
        from edge_sr.models import card_of, load_checkpoint
        from edge_sr.reparam import reparameterize

        assert cfg.teacher is not None
        if not Path(cfg.teacher).is_file():
            raise ConfigError(cfg.teacher, "distill.teacher: no such checkpoint file")
        self.cfg = cfg
        teacher = load_checkpoint(cfg.teacher, model=cfg.teacher_model)
        have = card_of(teacher).scale
        if have != scale:
            raise ConfigError(cfg.teacher, f"distill.teacher is a x{have} model; the student is x{scale}")
        if not cfg.features:  # nothing of the teacher is tapped: its deploy form computes the same, faster
            teacher = reparameterize(teacher, inplace=True)
        else:  # tapped by module name: blocks that can run their fused kernel keep their names and do so
            for m in teacher.modules():
                if isinstance(getattr(m, "collapsed", None), bool):
                    setattr(m, "collapsed", True)  # noqa: B010 (a plain attribute of some modules only)
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.pairs = [(s, t) for s, t in cfg.features]  # two names each (train.config_checks)
        self.student_taps = _Taps(student, [s for s, _ in self.pairs], "student")
        self.teacher_taps = _Taps(self.teacher, [t for _, t in self.pairs], "teacher")

    def loss(
        self, net: nn.Module, lr: Tensor, hr: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """The weighted sum of the ground-truth, teacher-output and feature terms for this batch."""
        cfg = self.cfg
        with torch.no_grad():
            target = self.teacher(lr)
        sr = net(lr)
        loss = cfg.gt_weight * loss_fn(sr, hr) + cfg.output_weight * loss_fn(sr, target.to(sr.dtype))
        if self.pairs and cfg.feature_weight:
            terms = []
            for s, t in self.pairs:
                fs, ft = self.student_taps.out[s], self.teacher_taps.out[t]
                if fs.shape[-2:] != ft.shape[-2:]:
                    raise ConfigError(
                        "distill.features",
                        f"student {s!r} is {tuple(fs.shape[-2:])} and teacher {t!r} {tuple(ft.shape[-2:])}: "
                        "a pair needs the same height and width",
                    )
                terms.append(attention_loss(fs.float(), ft.float()))
            loss = loss + cfg.feature_weight * torch.stack(terms).mean()
        return loss
