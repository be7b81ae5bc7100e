"""A one-layer transformer with the Fourier algorithm planted by hand at chosen frequencies.

Embedding: token x -> (cos w_k e(x), sin w_k e(x)) for each planted k, where e(x) is the group element of token x
(x itself over Z_p; the discrete log for the multiplicative group). W_Q = W_K = 0, so '=' attends 1/3 to a, b
and '='; one head copies the embedding, so the MLP sees cos(w e(a) + phi) + cos(w e(b) + phi) through a neuron
of phase phi. Summed over evenly spaced phases with output weights (cos 2phi, -sin 2phi), the ReLU neurons give
|cos(w(e(a) - e(b))/2)| (cos w(e(a)+e(b)), sin w(e(a)+e(b))), and W_U turns that into logits
~ cos(w(e(a) + e(b) - e(c))): the algorithm of Nanda et al. 2023 for x+y (x*y in the multiplicative group).
"""

from __future__ import annotations

import math

import torch

from interp.modular import ModularStructure
from training.config import ModelConfig
from training.models.build import build_model
from training.models.transformer import Transformer
from training.tasks.data import TaskData


def planted_model(data: TaskData, s: ModularStructure, freqs: tuple[int, ...], phases: int = 10,
                  scale: float = 40.0) -> Transformer:
    K = len(freqs)
    cfg = ModelConfig(d_model=4 * K + 2, n_heads=1, d_head=2 * K, d_mlp=K * phases + 2)  # 2 spare neurons stay dead
    model = build_model(cfg, data)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    e = torch.arange(s.n, dtype=torch.float64)  # group element of each token in s.elements
    for r, k in enumerate(freqs):
        w = 2 * math.pi * k / s.n
        sd["embed.W_E"][s.elements, 2 * r] = torch.cos(w * e).float()
        sd["embed.W_E"][s.elements, 2 * r + 1] = torch.sin(w * e).float()
        for q in range(phases):
            phi = 2 * math.pi * q / phases
            neuron = r * phases + q
            sd["blocks.0.mlp.W_in"][2 * r, neuron] = 3 * math.cos(phi)
            sd["blocks.0.mlp.W_in"][2 * r + 1, neuron] = -3 * math.sin(phi)
            sd["blocks.0.mlp.W_out"][neuron, 2 * K + 2 * r] = math.cos(2 * phi)
            sd["blocks.0.mlp.W_out"][neuron, 2 * K + 2 * r + 1] = -math.sin(2 * phi)
        sd["unembed.W_U"][2 * K + 2 * r, s.elements] = scale * torch.cos(w * e).float()
        sd["unembed.W_U"][2 * K + 2 * r + 1, s.elements] = scale * torch.sin(w * e).float()
    for x in range(2 * K):
        sd["blocks.0.attn.W_V"][0, x, x] = 1.0
        sd["blocks.0.attn.W_O"][0, x, x] = 1.0
    model.load_state_dict(sd)
    return model.eval()
