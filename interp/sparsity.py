"""Sparsity probes: is the network's answer carried by a few hidden units or by many? (Merrill et al. 2023)

Every probe works on any model through the models' common interface (`neuron_hook`, `neuron_weights`,
`neuron_readout`): the MLP (`layers.{i}.hook_post`), the transformer (`blocks.{i}.mlp.hook_post`), the LSTM (its
last hidden state, `hook_final`), or a TransformerBridge (read as our transformer). Neuron j's incoming weights are
column j of W_in (without b_in[j], as Merrill et al. rank them); ablating a neuron means zeroing its unit.

    >>> import interp
    >>> run = interp.load_run("checkpoints/parity-blog")
    >>> model, data = run.model(run.steps[-1]), run.data
    >>> es = interp.sparsity.effective_sparsity(model, data.inputs[data.train_idx], data.labels[data.train_idx], data.loss)
    >>> es.n_neurons, interp.sparsity.faithfulness(model, es.keep, data.inputs[data.test_idx], data.labels[data.test_idx], data.loss)

When the output is an affine function of the units (the last hidden layer of the MLP; the last block of a
transformer without LayerNorm) the accuracy of every top-m subnetwork comes from one forward pass and a cumulative
sum of per-neuron contributions; otherwise the units are zeroed through a hook, one forward pass per subnetwork.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import gaussian_kde

from interp.grid import as_model

# --- the hidden layer of any model ---------------------------------------------------------------------------


@dataclass
class HiddenLayer:
    """Where a model's hidden units live.

    Attributes:
        name: module path, "layers.0" (MLP) or "blocks.0.mlp" (transformer).
        hook: the units' activation hook, e.g. "layers.0.hook_post".
        W_in: [d_in, d_mlp] incoming weights (column j = neuron j); b_in: [d_mlp].
        readout: [d_mlp, d_out] when the output is affine in the units (output = base + post @ readout), else None.
    """

    name: str
    hook: str
    W_in: torch.Tensor
    b_in: torch.Tensor
    readout: torch.Tensor | None = None

    @property
    def d_mlp(self) -> int:
        return self.W_in.shape[1]


def hidden_layer(model: torch.nn.Module, layer: int = 0) -> HiddenLayer:
    """Hidden layer number `layer` of any model (our models' common interface; a TransformerBridge is read as our
    transformer): the MLP's `layers.{layer}`, a transformer's `blocks.{layer}.mlp`, the LSTM's last hidden state."""
    model = as_model(model)
    n = model.n_neuron_layers
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} out of range: the model has {n} hidden layer(s)")
    hook = model.neuron_hook(layer)
    W_in, b_in = model.neuron_weights(layer)
    readout = model.neuron_readout(layer)
    return HiddenLayer(hook.rpartition(".")[0] or hook, hook, W_in.detach(), b_in.detach(),
                       None if readout is None else readout.detach())


def neuron_norms(model: torch.nn.Module, layer: int = 0, bias: bool = False) -> np.ndarray:
    """[d_mlp] L2 norm of each neuron's incoming weights (column j of W_in, and b_in[j] when `bias`)."""
    h = hidden_layer(model, layer)
    sq = (h.W_in.double() ** 2).sum(0) + (h.b_in.double() ** 2 if bias else 0)
    return sq.sqrt().numpy()


def predictions(out: torch.Tensor, loss: str) -> torch.Tensor:
    """Predicted class from outputs [..., d_out]: the sign of the one output (hinge), else the argmax.

    Hinge: class 1 for a positive output, 0 for a negative one, and -1 (no class, never right) for an output of
    exactly 0, as Merrill et al.'s code compares sign(output) with labels in {-1, +1}. Counting 0 as class 0 made
    the empty subnetwork (output exactly 0) "right" on every class-0 example.
    """
    if loss == "hinge":
        o = out[..., 0]
        return torch.where(o > 0, 1, torch.where(o < 0, 0, -1))
    return out.argmax(-1)


class Ablator:
    """The model's outputs on fixed inputs `x` with only some hidden units kept.

    With a linear readout the units' activations [N, d_mlp] are cached once and a subnetwork's output is
    base + post[:, keep] @ readout[keep] (float64); otherwise every call is a forward pass with the others zeroed.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, layer: int = 0):
        model = as_model(model)
        self.model, self.x, self.h = model, x, hidden_layer(model, layer)
        with torch.no_grad():
            out, cache = model.run_with_cache(x, names_filter=self.h.hook)
        self.post = cache[self.h.hook]
        if self.post.ndim == 3:  # transformer [batch, pos, d_mlp]: the last position is the one read out
            self.post = self.post[:, -1]
        self.full = model.logits_at_answer(out).double()
        self.linear = self.h.readout is not None
        if self.linear:
            self.post = self.post.double()
            self.readout = self.h.readout.double()
            # the empty subnetwork from its own forward pass, not full - post @ readout: an output that is exactly
            # 0 (no class for the hinge loss) must not come out as +-1e-17
            with torch.no_grad():
                base = model.run_with_hooks(x, fwd_hooks=[(self.h.hook, lambda act, hook: act * 0)])
                self.base = model.logits_at_answer(base).double()

    def outputs(self, keep: torch.Tensor) -> torch.Tensor:
        """[N, d_out] outputs with only the units where `keep` [d_mlp] (bool) is True."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if self.linear:
            return self.base + self.post[:, keep] @ self.readout[keep]
        mask = keep.to(self.post.dtype)
        with torch.no_grad():
            out = self.model.run_with_hooks(self.x, fwd_hooks=[(self.h.hook, lambda act, hook: act * mask)])
        return self.model.logits_at_answer(out).double()

    def accuracy_curve(self, order: np.ndarray, labels: torch.Tensor, loss: str) -> np.ndarray:
        """[d_mlp + 1] accuracy of the subnetwork of the first m units of `order`, for m = 0 .. d_mlp.

        Linear readout only (a cumulative sum over units, in chunks that keep memory near 16 MiB).
        """
        assert self.linear
        order = torch.as_tensor(np.asarray(order), dtype=torch.long)
        n, d_out = self.base.shape
        correct = [(predictions(self.base, loss) == labels).double().mean().item()]
        running = self.base.clone()
        chunk = max(1, 2_000_000 // max(n * d_out, 1))
        for i in range(0, len(order), chunk):
            idx = order[i : i + chunk]
            contrib = self.post[:, idx, None] * self.readout[idx][None]  # [N, c, d_out]
            partial = running[:, None] + contrib.cumsum(1)
            correct.extend((predictions(partial, loss) == labels[:, None]).double().mean(0).tolist())
            running = partial[:, -1]
        return np.array(correct)


# --- effective sparsity and faithfulness ---------------------------------------------------------------------


RULES = ("merrill2023", "reach")


@dataclass
class EffectiveSparsity:
    """The smallest top-norm subnetwork that reproduces the full network's training accuracy.

    Attributes:
        n_neurons: its size (Merrill et al.'s effective sparsity).
        keep: [d_mlp] bool, the neurons in it.
        order: [d_mlp] neuron indices by decreasing incoming-weight norm.
        norms: [d_mlp] the incoming-weight norms the neurons were ranked by.
        full_accuracy: the full network's training accuracy.
        curve: [d_mlp + 1] training accuracy of the top-m subnetwork for m = 0 .. d_mlp (NaN where not evaluated).
        rule: which definition found it (see `effective_sparsity`).
    """

    n_neurons: int
    keep: np.ndarray
    order: np.ndarray
    norms: np.ndarray
    full_accuracy: float
    curve: np.ndarray = field(repr=False)
    rule: str = "merrill2023"


def effective_sparsity(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: str, layer: int = 0,
                       rule: str = "merrill2023", tol: float = 0.0) -> EffectiveSparsity:
    """Fewest neurons, taken by decreasing incoming-weight norm, whose subnetwork (the other units zeroed)
    reproduces the full network's accuracy on (x, labels), the training set.

    rule "merrill2023" (default) follows Merrill et al.'s code (Tsili42/parity-nn, `circuit_discovery_linear`):
    neurons ranked by the norm of their incoming weights without the bias (column j of W_in), k = 1, 2, ... and
    the first k whose subnetwork's accuracy equals the full network's exactly. Deviations from their code:
    - any hidden layer of any model (their code: the first layer of a one-hidden-layer MLP without output bias);
      every subnetwork keeps the output bias b_U (and, in a transformer, attention and the residual stream): only
      the hidden units are zeroed;
    - accuracy uses `predictions`: an output of exactly 0 is never right, as sign(0) never equals their +-1
      labels; the training loop's accuracy counts it as class 0 (the two differ only on an output of exactly 0);
    - k = d_mlp is allowed (the full network matches itself), where their loop stops at d_mlp - 1 and reports
      infinity; with a non-affine readout m is found by bisection on accuracy >= full, then stepped up to the
      first exact match (their code bisects after epoch 20 and falls back to the linear search);
    - classification with an argmax (cross-entropy tasks) uses the same rule; their code has only the sign.
    rule "reach" is this toolkit's earlier definition, kept for comparison: norms with the bias, m from 0, and
    accuracy >= the full network's less `tol`. At initialisation it reports 0 neurons whenever the empty network's
    constant answer scores at least as well as the full network's near-chance guesses.

    x: [N, ...] inputs; labels: [N] class ids. With a linear readout every m is evaluated exactly; otherwise only
    the bisection's m, and `curve` is NaN elsewhere.
    """
    if labels.dtype != torch.long:
        raise ValueError("effective sparsity needs class labels (accuracy); this task is a regression")
    if rule not in RULES:
        raise ValueError(f"unknown rule '{rule}': one of {', '.join(RULES)}")
    exact = rule == "merrill2023"
    norms = neuron_norms(model, layer, bias=not exact)
    order = np.argsort(-norms, kind="stable")
    ab = Ablator(model, x, layer)
    d = ab.h.d_mlp
    curve = ab.accuracy_curve(order, labels, loss) if ab.linear else np.full(d + 1, np.nan)

    def acc(m: int) -> float:
        if np.isnan(curve[m]):
            keep = torch.zeros(d, dtype=torch.bool)
            keep[torch.as_tensor(order[:m])] = True
            curve[m] = (predictions(ab.outputs(keep), loss) == labels).double().mean().item()
        return curve[m]

    full = acc(d)  # accuracies are counts over the same N: equal counts give equal floats
    if ab.linear:
        ok = curve == full if exact else curve >= full - tol - 1e-12
        ok[0] &= not exact
        m = int(np.argmax(ok))
    else:
        lo, hi = (1 if exact else 0), d  # acc(hi) reaches the target; find the smallest such m
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if acc(mid) >= full - (0 if exact else tol) - 1e-12 else (mid + 1, hi)
        m = hi
        while exact and acc(m) != full:
            m += 1
    keep = np.zeros(d, dtype=bool)
    keep[order[:m]] = True
    return EffectiveSparsity(m, keep, order, norms, float(full), curve, rule)


def faithfulness(model: torch.nn.Module, keep: np.ndarray, x: torch.Tensor, labels: torch.Tensor, loss: str,
                 layer: int = 0, n_random: int = 20, seed: int = 0) -> dict[str, float]:
    """How well the subnetwork `keep` [d_mlp] stands in for the full network on (x, labels) (test data).

    faithfulness: fraction of inputs where the subnetwork predicts what the full network predicts (for the hinge
    loss: the same sign, an output of 0 agreeing only with 0, as in Merrill et al.'s code).
    random_faithfulness: the same for random subnetworks of the same size (mean over `n_random` draws from `seed`).
    Also the test accuracy of the subnetwork, of the full network and of the random subnetworks (mean).

    Which subnetwork is the caller's choice. `analyses.sparsity` reports two: each checkpoint's own effective
    subnetwork against the mean of 20 random ones (ours), and, as Merrill et al. do, the final checkpoint's
    circuit followed across training against one random set of its size, the same set at every checkpoint.
    """
    keep = np.asarray(keep, dtype=bool)
    ab = Ablator(model, x, layer)
    full_pred = predictions(ab.full, loss)
    sub_pred = predictions(ab.outputs(torch.from_numpy(keep)), loss)
    rng = np.random.default_rng(seed)
    d, m = len(keep), int(keep.sum())
    agree, acc = [], []
    for _ in range(n_random):
        rand = np.zeros(d, dtype=bool)
        rand[rng.choice(d, m, replace=False)] = True
        pred = predictions(ab.outputs(torch.from_numpy(rand)), loss)
        agree.append((pred == full_pred).double().mean().item())
        acc.append((pred == labels).double().mean().item())
    return {"faithfulness": (sub_pred == full_pred).double().mean().item(),
            "random_faithfulness": float(np.mean(agree)), "random_faithfulness_std": float(np.std(agree)),
            "subnetwork_accuracy": (sub_pred == labels).double().mean().item(),
            "full_accuracy": (full_pred == labels).double().mean().item(), "random_accuracy": float(np.mean(acc)),
            "n_neurons": m}


# --- weight statistics ----------------------------------------------------------------------------------------


def spectral_norms(weights: dict[str, torch.Tensor], batch_dims: int = 0) -> dict[str, np.ndarray]:
    """Largest singular value of every weight matrix (float64).

    weights: name -> tensor; the last two dims are the matrix, the `batch_dims` leading ones are a batch (e.g. a
    stack of checkpoints [T, d_in, d_mlp]), dims in between are per-matrix slices (W_Q [n_heads, d_model, d_head]
    gives one norm per head). Tensors with fewer than two matrix dims (biases, LayerNorm) are skipped.
    Returns name -> array of shape [*batch, *slices] ([] for a plain matrix).
    """
    out = {}
    for name, w in weights.items():
        if w.ndim - batch_dims >= 2 and torch.is_floating_point(w):
            out[name] = torch.linalg.matrix_norm(w.detach().double(), ord=2).numpy()
    return out


def l1_l2_ratio(w: np.ndarray | torch.Tensor) -> np.ndarray:
    """||w||_1 / ||w||_2 over the last axis: 1 for one non-zero entry, sqrt(n) for n equal ones."""
    w = np.abs(np.asarray(w, dtype=np.float64))
    return w.sum(-1) / np.sqrt((w**2).sum(-1))


def hoyer(w: np.ndarray | torch.Tensor) -> np.ndarray:
    """Hoyer sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1) over the last axis: 0 = all equal, 1 = one non-zero."""
    n = np.asarray(w).shape[-1]
    return (np.sqrt(n) - l1_l2_ratio(w)) / (np.sqrt(n) - 1)


def gini(w: np.ndarray | torch.Tensor) -> np.ndarray:
    """Gini index of |w| over the last axis (Hurley & Rickard 2009): 0 = all equal, -> 1 = one non-zero.

    G = 1 - 2 sum_k (c_(k) / ||c||_1) (n - k + 1/2) / n with c sorted ascending, k = 1..n.
    """
    c = np.sort(np.abs(np.asarray(w, dtype=np.float64)), axis=-1)
    n = c.shape[-1]
    k = np.arange(1, n + 1)
    return 1 - 2 * ((c / c.sum(-1, keepdims=True)) * (n - k + 0.5) / n).sum(-1)


def weight_kde(w: np.ndarray | torch.Tensor, grid: np.ndarray | None = None, n_grid: int = 256,
               max_points: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian KDE (scipy, Scott's bandwidth) of the entries of `w`, evaluated on `grid` (default: n_grid points
    spanning the entries, padded by 3 bandwidths). Above `max_points` entries a seeded subsample is used.
    Returns (grid [G], density [G])."""
    v = np.asarray(w, dtype=np.float64).ravel()
    if len(v) > max_points:
        v = np.random.default_rng(seed).choice(v, max_points, replace=False)
    kde = gaussian_kde(v)
    if grid is None:
        pad = 3 * float(np.sqrt(kde.covariance[0, 0]))
        grid = np.linspace(v.min() - pad, v.max() + pad, n_grid)
    return np.asarray(grid), kde(grid)


# --- hidden representations -----------------------------------------------------------------------------------


def hidden_activations(model: torch.nn.Module, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """[N, d_mlp] the hidden units' activations (hook_post; the last position for a transformer)."""
    model = as_model(model)
    hidden_layer(model, layer)  # the range check
    return model.neuron_activations(x, layer)


def bit_classes(inputs: torch.Tensor | np.ndarray, bits: list[int]) -> np.ndarray:
    """[N] class id in 0 .. 2^k - 1 from the signs of the k relevant bits (bit i of the id is x[bits[i]] > 0)."""
    x = np.asarray(inputs)[:, bits] > 0
    return (x * (1 << np.arange(len(bits)))).sum(1)


def tsne(hidden: torch.Tensor | np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """[N, 2] t-SNE embedding (scikit-learn, PCA initialisation) of hidden representations [N, d].

    Runs on one thread: on a small shared CPU, OpenMP's busy-waiting threads made it ~10x slower, not faster.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    h = np.asarray(hidden, dtype=np.float64)
    if h.std(0).max() == 0:  # every input maps to the same point (e.g. all units dead)
        return np.zeros((len(h), 2))
    perplexity = min(perplexity, (len(h) - 1) / 3)
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(h)


def class_separation(hidden: torch.Tensor | np.ndarray, classes: np.ndarray) -> float:
    """Silhouette score (scikit-learn, Euclidean) of the hidden representations grouped by `classes`: near 0 when
    the groups overlap, towards 1 when the representation clusters by them (NaN if undefined)."""
    from sklearn.metrics import silhouette_score

    h = np.asarray(hidden, dtype=np.float64)
    if len(np.unique(classes)) < 2 or h.std(0).max() == 0:
        return float("nan")
    return float(silhouette_score(h, classes))
