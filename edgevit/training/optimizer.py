"""AdamW in two groups (no weight decay on norms, biases and embeddings) and the weights' moving average."""

from __future__ import annotations

from tinygrad import Tensor, nn
from tinygrad.nn.state import get_state_dict

from edgevit.model import ViT, ViTConfig
from edgevit.training.settings import TrainSettings
from edgevit.weights import OPTIMIZER_PREFIX

# LayerNorm scales, biases, the class token and position embeddings are not weights to shrink
NO_DECAY_SUFFIXES = (".bias", "cls_token", "pos_embedding")
NO_DECAY_PARTS = ("ln1.", "ln2.", "norm.")


class Optimizer:
    """AdamW over `model`'s parameters and, with `settings.ema`, a second model holding their moving
    average (updated after every step; what a run ships, as it generalises better than the last step)."""

    def __init__(self, model: ViT, config: ViTConfig, settings: TrainSettings):
        self.params = get_state_dict(model)
        decay = [k for k in self.params if not (k.endswith(NO_DECAY_SUFFIXES) or any(p in k for p in NO_DECAY_PARTS))]
        keep = [k for k in self.params if k not in decay]
        self.groups = {
            name: (names, nn.optim.AdamW([self.params[k] for k in names], lr=settings.lr, weight_decay=wd, fused=False))
            for name, names, wd in (("decay", decay, settings.weight_decay), ("no_decay", keep, 0.0))
        }
        self.all = nn.optim.OptimizerGroup(*(opt for _, opt in self.groups.values()))
        self.ema, self.ema_decay = None, settings.ema
        if settings.ema:
            self.ema = ViT(config)
            for name, t in get_state_dict(self.ema).items():
                t.assign(self.params[name].detach()).realize()

    def step(self, lr: Tensor) -> list[Tensor]:
        """Inside the compiled step, after backward(): the tensors that apply the update."""
        for _, opt in self.groups.values():
            opt.lr.assign(lr)
        return self.all.schedule_step()

    def average(self) -> None:
        """Inside the compiled step, after the update: move the moving average toward the weights."""
        if self.ema is not None:
            d, averaged = self.ema_decay, get_state_dict(self.ema)
            Tensor.realize(*(averaged[k].assign(averaged[k] * d + w.detach() * (1 - d)) for k, w in self.params.items()))

    def state(self) -> dict[str, Tensor]:
        """The optimizer's tensors under their checkpoint names (with the weights' moving average: it
        is as much training state as the moments are)."""
        state = {}
        if self.ema is not None:
            state |= {f"{OPTIMIZER_PREFIX}ema.{k}": t for k, t in get_state_dict(self.ema).items()}
        for group, (names, opt) in self.groups.items():
            prefix = f"{OPTIMIZER_PREFIX}{group}."
            state |= {prefix + "b1_t": opt.b1_t, prefix + "b2_t": opt.b2_t}
            state |= {f"{prefix}m.{n}": m for n, m in zip(names, opt.m)}
            state |= {f"{prefix}v.{n}": v for n, v in zip(names, opt.v)}
        return state

    @property
    def shipped(self) -> dict[str, Tensor]:
        """What a weights file holds: the moving average when there is one, else the weights."""
        return get_state_dict(self.ema) if self.ema is not None else dict(self.params)
