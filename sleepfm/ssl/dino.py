"""DINO self-distillation with OSF's channel-invariance recipe (Shuai et al., 2026)."""
from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..exceptions import InvalidParameterError
from .augment import check_span, make_view
from .base import Objective, projection_mlp, register_objective

__all__ = ["DINO", "DINOHead"]


class DINOHead(nn.Module):
    """DINO's projection head: an MLP to a bottleneck, L2-normalised, then prototypes whose
    weight rows are normalised to unit length (weight norm with its scale fixed at 1).

    Parameters
    ----------
    in_dim : int
    out_dim : int, default=2048
        Prototypes.
    hidden_dim : int, default=2048
    bottleneck_dim : int, default=256
    layers : int, default=3
    """

    def __init__(self, in_dim: int, out_dim: int = 2048, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.mlp = projection_mlp(in_dim, hidden_dim, bottleneck_dim, layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.prototypes, dim=-1))


@register_objective("dino")
class DINO(Objective):
    """Self-distillation without labels: a student matches an EMA teacher across views.

    Each batch gives ``n_global + n_local`` augmented views (:func:`~sleepfm.ssl.augment.make_view`:
    per-sample lead dropout with probability ``lead_drop`` keeping at least one lead, then a
    zeroed span of ``span`` of the epoch per lead — OSF's channel-invariance augmentation; views
    are full 30 s epochs). The teacher sees the global views, the student all of them. With
    ``t`` the teacher's and ``s`` the student's prototype scores of the backbone's epoch embedding,

    ``loss = mean over (student view, global view) pairs of
    -sum softmax((t - c) / tau_t) * log_softmax(s / tau_s)``

    over every pair, a view with itself included, as OSF does. The centre ``c`` is an EMA
    (``center_momentum``) of the teacher's mean scores on the global views, summed across
    devices under DDP; ``tau_t`` rises linearly from ``teacher_temp[0]`` to ``teacher_temp[1]``
    over the first ``teacher_warmup`` of the steps. After each optimiser step the teacher (backbone
    and head) moves towards the student with momentum
    ``1 - (1 - momentum) (cos(pi progress) + 1) / 2``, from ``momentum`` to 1.

    Parameters
    ----------
    out_dim, hidden_dim, bottleneck_dim : int, default=2048, 2048, 256
        Prototypes, hidden width and bottleneck of the 3-layer head (:class:`DINOHead`).
    student_temp : float, default=0.1
    teacher_temp : (float, float), default=(0.04, 0.07)
    teacher_warmup : float, default=0.1
        Fraction of the steps over which the teacher temperature rises.
    center_momentum : float, default=0.9
    momentum : float, default=0.996
        Starting EMA momentum of the teacher.
    n_global, n_local : int, default=2
    lead_drop : float, default=0.5
    span : (float, float), default=(0.3, 0.6)

    Notes
    -----
    The exported encoder is the teacher's backbone, the latest one: the loss moves with the
    temperature schedule, so it does not rank encoders (:attr:`loss_ranks_encoders` False). The optimiser recipe OSF pairs with DINO
    (AdamW, betas (0.9, 0.95), weight decay 0.2, 10 % warm-up, cosine decay, gradient clipping 3)
    is the pre-training configuration's business (``sleepfm bench`` sets it). Logged terms:
    ``teacher_temp``, ``epoch_entropy`` (mean entropy of the teacher's distribution per epoch:
    near log(out_dim) when the teacher says nothing, the uniform collapse), ``teacher_entropy``
    (entropy of its mean distribution: near 0 when every epoch goes to the same prototypes) and
    ``center_norm``; :meth:`diagnose` reads them.
    """

    loss_ranks_encoders = False

    def __init__(self, *, out_dim: int = 2048, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 student_temp: float = 0.1, teacher_temp=(0.04, 0.07), teacher_warmup: float = 0.1,
                 center_momentum: float = 0.9, momentum: float = 0.996, n_global: int = 2,
                 n_local: int = 2, lead_drop: float = 0.5, span=(0.3, 0.6)) -> None:
        super().__init__()
        self.t0, self.t1 = (float(v) for v in teacher_temp)
        for name, value in {"student_temp": student_temp, "teacher_temp[0]": self.t0,
                            "teacher_temp[1]": self.t1}.items():
            if not value > 0:
                raise InvalidParameterError(f"{name} must be > 0, got {value}.")
        for name, value in {"teacher_warmup": teacher_warmup, "center_momentum": center_momentum,
                            "momentum": momentum}.items():
            if not 0.0 <= value <= 1.0:
                raise InvalidParameterError(f"{name} must be in [0, 1], got {value}.")
        if n_global < 1 or n_local < 0:
            raise InvalidParameterError(f"need n_global >= 1 and n_local >= 0, got {n_global} "
                                        f"and {n_local}.")
        self.span = check_span(span, lead_drop)
        self.sizes = (out_dim, hidden_dim, bottleneck_dim)
        self.student_temp, self.teacher_warmup = float(student_temp), float(teacher_warmup)
        self.center_momentum, self.momentum = float(center_momentum), float(momentum)
        self.n_global, self.n_local, self.lead_drop = n_global, n_local, float(lead_drop)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def bind(self, encoder: nn.Module) -> None:
        super().bind(encoder)
        out_dim, hidden, bottleneck = self.sizes
        self.head = DINOHead(encoder.embed_dim, out_dim, hidden, bottleneck)
        self.teacher = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "teacher"):
            self.teacher.eval()
            self.teacher_head.eval()
        return self

    def teacher_temperature(self, progress: float) -> float:
        """The teacher's temperature at ``progress`` (fraction of the steps done)."""
        if self.teacher_warmup <= 0 or progress >= self.teacher_warmup:
            return self.t1
        return self.t0 + (self.t1 - self.t0) * progress / self.teacher_warmup

    def teacher_momentum(self, progress: float) -> float:
        """EMA momentum of the teacher at ``progress``: cosine from ``momentum`` to 1."""
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * min(progress, 1.0)) + 1.0) / 2.0

    def loss(self, encoder, x, mask, *, progress: float = 0.0):
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        b = x.shape[0]
        views = [make_view(x, mask, p_drop=self.lead_drop, span=self.span)
                 for _ in range(self.n_global + self.n_local)]
        xs, masks = torch.cat([v.x for v in views]), torch.cat([v.mask for v in views])
        g = self.n_global * b
        temp = self.teacher_temperature(progress)
        with torch.no_grad():
            t_scores = self.teacher_head(self.teacher(xs[:g], masks[:g])).float()
            targets = F.softmax((t_scores - self.center) / temp, dim=-1).split(b)
        s_logp = F.log_softmax(self.head(encoder(xs, masks)).float() / self.student_temp,
                               dim=-1).split(b)
        total = sum(-(t * s).sum(dim=-1).mean() for s in s_logp for t in targets)
        loss = total / (len(s_logp) * len(targets))
        if self.training:
            self.update_center(t_scores)
        t_all = torch.cat(targets)
        mean_t = t_all.mean(dim=0)
        terms = {"teacher_temp": torch.tensor(temp),
                 "epoch_entropy": _entropy(t_all).mean(),
                 "teacher_entropy": _entropy(mean_t),
                 "center_norm": self.center.norm()}
        return loss, {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def update_center(self, teacher_scores: Tensor) -> None:
        """Move the centre towards the batch mean of the teacher's scores (all devices)."""
        total = teacher_scores.sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher_scores)), device=total.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        batch_mean = total / count
        self.center.mul_(self.center_momentum).add_(batch_mean * (1 - self.center_momentum))

    @torch.no_grad()
    def after_step(self, encoder: nn.Module, *, progress: float) -> None:
        m = self.teacher_momentum(progress)
        for student, teacher in ((encoder, self.teacher), (self.head, self.teacher_head)):
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1.0 - m)

    def export(self, encoder: nn.Module) -> nn.Module:
        return self.teacher

    def diagnose(self, terms) -> str | None:
        """Uniform collapse (each epoch's teacher distribution near uniform: no learning signal;
        read from ``epoch_entropy``, else from the loss, the cross-entropy the student reaches)
        or collapse onto a few prototypes (``teacher_entropy`` near 0)."""
        top = math.log(self.sizes[0])
        per_epoch = terms.get("epoch_entropy", terms.get("loss"))
        if per_epoch is not None and math.isfinite(per_epoch) and per_epoch >= 0.97 * top:
            return (f"the teacher's output per epoch stayed uniform over the {self.sizes[0]} "
                    f"prototypes (entropy {per_epoch:.2f} of at most {top:.2f}), so the student "
                    "had nothing to match: DINO did not start to learn (uniform collapse); it "
                    "needs a larger budget, a lower learning rate or a sharper teacher")
        usage = terms.get("teacher_entropy")
        if usage is not None and math.isfinite(usage) and usage < 0.05 * top:
            return (f"the teacher collapsed onto a few prototypes (entropy of its mean "
                    f"distribution {usage:.2f} of {top:.2f}); raise the centring or lower the "
                    "learning rate")
        return None


def _entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of distributions along the last axis."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim=-1)
