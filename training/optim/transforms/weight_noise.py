"""Power et al.'s weight noise around each training forward."""

from __future__ import annotations

import torch

from training.optim.transforms.base import Transform


NOISE_SEED_OFFSET = 0x9E3779B97F4A7C15  # keeps the noise stream apart from the minibatch stream of the same seed


class WeightNoise(Transform):
    """Power et al.'s weight noise: each training forward sees w + N(0, sigma_k^2) per weight, drawn from member k's
    own generator (CPU, seeded from its batch seed), and the clean weights are restored bit-exactly after the
    backward, so the optimiser updates the clean weights with the gradient taken at the noisy ones."""

    name = "noise"

    def __init__(self, sigmas: list[float], batch_seeds: list[int]):
        self.sigmas = list(sigmas)
        self.gens = [torch.Generator().manual_seed((s + NOISE_SEED_OFFSET) % 2**64) for s in batch_seeds]
        self._clean: list[torch.Tensor] | None = None

    @torch.no_grad()
    def before_forward(self, params: list[torch.Tensor]) -> None:
        self._clean = [p.detach().clone() for p in params]
        for k, (sigma, g) in enumerate(zip(self.sigmas, self.gens)):
            if sigma > 0:
                for p in params:
                    p[k].add_(torch.randn(p.shape[1:], generator=g, dtype=p.dtype).to(p.device), alpha=sigma)

    @torch.no_grad()
    def after_backward(self, params: list[torch.Tensor]) -> None:
        for p, c in zip(params, self._clean):
            p.copy_(c)  # a copy, not a subtraction: (w + n) - n is not always w in floating point
        self._clean = None

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return {"transform.noise.rng": self.gens[k].get_state()}

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        self.gens[k].set_state(tensors["transform.noise.rng"])

    def keep(self, idx: torch.Tensor) -> None:
        self.sigmas = [self.sigmas[i] for i in idx.tolist()]
        self.gens = [self.gens[i] for i in idx.tolist()]


def build_weight_noise(tr) -> WeightNoise:
    return WeightNoise([c.optim.weight_noise for c in tr.cfgs], [c.train.batch_seed for c in tr.cfgs])
