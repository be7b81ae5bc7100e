"""Representation view of a group-task model (Chughtai et al. 2023): which irreducible representations it uses.

Their group composition via representations (GCR) algorithm predicts logit(a, b, c) ~ sum_rho w_rho chi_rho(a b c^-1)
over a few key irreps rho. For each irrep this module measures, on the logits over every input pair:

- `char_similarity`: cosine similarity of the logits (centred over c, which softmax ignores) with
  chi_rho(f(a, b) c^-1), where f(a, b) is the task's answer (a b for x*y); Chughtai et al.'s "logit trace
  similarity". The functions for different irreps are orthogonal, so the squares add up: `char_explained` of a set
  of irreps is the share of logit variance that sum_rho w_rho chi_rho(f(a, b) c^-1) explains (w_rho >= 0).
- `variance_share`: the share of logit variance (as functions of c) in rho's isotypic component, the span of its
  matrix coefficients (d_rho^2 dimensions of the |G|). The shares of all irreps add up to 1; a random function puts
  d_rho^2 / |G| in each (S5: 6d 30%, 5d 21% each, standard 13% each, sign 0.8%).
- `ablation_loss`: the cross-entropy over all pairs after removing rho from the logits, i.e. replacing each pair's
  logit vector (a function of c) by its projection off rho's isotypic component. This is what backs "key": an
  irrep the network computes with costs loss when removed, one that merely correlates with the answer does not.

Key irreps, two rules side by side (the same similarities, different thresholds and sums):

- ours (`key`): the irreps whose character term explains at least `key_threshold` (5%) of the logit variance,
  i.e. similarity^2 >= 0.05 with a positive similarity; `key_char_explained` is the variance they explain together.
- Chughtai et al.'s (`key_chughtai`): every non-trivial irrep with similarity > 0.005 (`CHUGHTAI_KEY_SIM`, the
  threshold in their code), and their "percent logits explained" (`chughtai_logits_explained`): the sum of
  similarity^2 over every non-trivial irrep, whatever its sign or size, so it is at least ours.

The same isotypic shares apply to any per-element matrix, e.g. the rows of W_U and W_E (`row_shares`).
Everything here needs only characters (`interp.groups.irreps`, S_n only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interp.groups import Group, irreps, isotypic_projector

KEY_THRESHOLD = 0.05  # ours: character term explains >= 5% of the logit variance
CHUGHTAI_KEY_SIM = 0.005  # Chughtai et al.'s code: logit trace similarity > 0.005


def projectors(G: Group) -> dict[str, np.ndarray]:
    """{irrep name: [n, n] isotypic projector}."""
    return {r.name: isotypic_projector(G, r) for r in irreps(G)}


def char_kernels(G: Group) -> dict[str, np.ndarray]:
    """{irrep name: K [n, n]} with K[g, c] = chi(g c^-1)."""
    return {r.name: r.chi[G.table[:, G.inverse]] for r in irreps(G)}


@torch.no_grad()
def all_logits(model: torch.nn.Module, inputs: torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """Logits of `model` at the answer on every input [N, n_ctx] -> [N, d_vocab_out] float64."""
    model.eval()
    return torch.cat([model.answer_logits(inputs[i : i + chunk]).double() for i in range(0, len(inputs), chunk)]).numpy()


@dataclass
class LogitIrreps:
    """Per-irrep view of one checkpoint's logits (see the module docstring for every quantity).

    Attributes:
        names, labels (with the partition, "5d_b (3,2)"): irreps, trivial first. char_similarity, char_explained
        (= similarity^2 for a positive similarity, else 0), variance_share, ablation_loss, ablation_acc:
        [n_irreps]. key, key_char_explained: our key irreps and the variance their characters explain;
        key_chughtai, chughtai_logits_explained: Chughtai et al.'s. loss: cross-entropy over all pairs;
        restricted_loss, restricted_acc: of the logits projected onto the key irreps' isotypic components (plus
        the constant); excluded_loss: of the logits with every key irrep removed.
    """

    names: list[str]
    labels: list[str]
    char_similarity: np.ndarray
    char_explained: np.ndarray
    variance_share: np.ndarray
    ablation_loss: np.ndarray
    ablation_acc: np.ndarray
    key: list[str]
    key_char_explained: float
    key_chughtai: list[str]
    chughtai_logits_explained: float
    loss: float
    restricted_loss: float | None
    restricted_acc: float | None
    excluded_loss: float | None
    key_threshold: float = KEY_THRESHOLD

    def label(self, name: str) -> str:
        return self.labels[self.names.index(name)]

    def to_dict(self) -> dict[str, Any]:
        per = {n: {"label": lab, "char_similarity": float(s), "char_explained": float(e), "variance_share": float(v),
                   "ablation_loss": float(al), "ablation_acc": float(aa)}
               for n, lab, s, e, v, al, aa in zip(self.names, self.labels, self.char_similarity, self.char_explained,
                                                   self.variance_share, self.ablation_loss, self.ablation_acc)}
        return {"irreps": per, "loss": self.loss,
                "key": self.key, "key_threshold": self.key_threshold,
                "key_rule": "ours: char_explained (similarity^2, positive similarity) >= key_threshold",
                "key_char_explained": self.key_char_explained,
                "key_chughtai": self.key_chughtai, "key_chughtai_threshold": CHUGHTAI_KEY_SIM,
                "key_chughtai_rule": "Chughtai et al.: char_similarity > key_chughtai_threshold, non-trivial irreps",
                "chughtai_logits_explained": self.chughtai_logits_explained,
                "chughtai_logits_explained_rule": "Chughtai et al.: sum of char_similarity^2 over non-trivial irreps",
                "restricted_loss": self.restricted_loss, "restricted_acc": self.restricted_acc,
                "excluded_loss": self.excluded_loss}


def _ce(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean()), float((logits.argmax(1) == labels).mean())


def _similarities(Lc: np.ndarray, answers: np.ndarray, G: Group, names: list[str]) -> np.ndarray:
    """Cosine similarity of the centred logits with chi(f(a, b) c^-1) for every irrep (0 for the trivial one)."""
    # sum over pairs of Lc[pair, c] chi(f(pair) c^-1) = sum_{g, c} S[g, c] chi(g c^-1), S = logits summed by answer
    S = np.zeros((G.order, G.order))
    np.add.at(S, answers, Lc)
    kernels = char_kernels(G)
    total = float((Lc * Lc).sum())
    norm_t = np.sqrt(len(Lc) * G.order)  # ||chi(f(a,b) c^-1)|| over all pairs: sum_c chi^2 = |G| per pair
    sim = np.array([(S * kernels[n]).sum() / (np.sqrt(max(total, 1e-300)) * norm_t) for n in names])
    sim[names.index("trivial")] = 0.0  # constant over c: nothing left after centring
    return sim


def logit_irreps(logits: np.ndarray, answers: np.ndarray, G: Group, key_threshold: float = KEY_THRESHOLD,
                 key: list[str] | None = None) -> LogitIrreps:
    """The representation view of logits [N, n] on pairs whose answers (element indices) are answers [N].

    `key` fixes our key irreps (e.g. those of the final checkpoint, to follow them over training); by default
    they are the irreps whose character term explains >= key_threshold of the logit variance. Chughtai et al.'s
    key irreps are always those of these logits.
    """
    L = np.asarray(logits, dtype=np.float64)
    answers = np.asarray(answers)
    Lc = L - L.mean(1, keepdims=True)
    total = float((Lc * Lc).sum())
    reps = irreps(G)
    names, labels = [r.name for r in reps], [r.label for r in reps]
    sim = _similarities(Lc, answers, G, names)
    projs = projectors(G)
    gram = Lc.T @ Lc
    share = np.array([(projs[n] * gram).sum() / max(total, 1e-300) for n in names])
    explained = np.where(sim > 0, sim**2, 0.0)
    if key is None:
        key = [n for n, e in zip(names, explained) if e >= key_threshold]
    key_expl = float(sum(explained[names.index(k)] for k in key))
    key_chughtai = [n for n, s in zip(names, sim) if n != "trivial" and s > CHUGHTAI_KEY_SIM]
    loss, _ = _ce(L, answers)
    ablated = [_ce(L - L @ projs[n], answers) for n in names]  # the projectors are symmetric
    r_loss = r_acc = x_loss = None
    if key:
        P = sum(projs[k] for k in key)
        r_loss, r_acc = _ce(L @ (projs["trivial"] + P), answers)
        x_loss, _ = _ce(L - L @ P, answers)
    return LogitIrreps(names, labels, sim, explained, share, np.array([a[0] for a in ablated]),
                       np.array([a[1] for a in ablated]), list(key), key_expl, key_chughtai, float((sim**2).sum()),
                       loss, r_loss, r_acc, x_loss, key_threshold)


def row_shares(X: np.ndarray, G: Group) -> dict[str, float]:
    """Share of the variance of rows X [n, d] (row i = element i, centred over elements) in each irrep's
    isotypic component; the trivial share is 0 after centring and the rest add up to 1."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    gram = Xc @ Xc.T
    total = max(float(np.trace(gram)), 1e-300)
    return {n: float((P * gram).sum() / total) for n, P in projectors(G).items()}


def random_shares(G: Group) -> dict[str, float]:
    """What a random function puts in each isotypic component: d^2 / |G|."""
    return {r.name: r.dim**2 / G.order for r in irreps(G)}
