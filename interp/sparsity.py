"""Sparsity probes: is the network's answer carried by a few hidden units or by many? (Merrill et al. 2023)

Every probe works on any model through the models' common interface (`neuron_hook`, `neuron_weights`,
`neuron_readout`): the MLP (`layers.{i}.hook_post`), the transformer (`blocks.{i}.mlp.hook_post`), the LSTM (its
last hidden state, `hook_final`), or a TransformerBridge (read as our transformer). Neuron j's incoming weights are
column j of W_in (plus b_in[j]); ablating a neuron means zeroing its unit.

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


def neuron_norms(model: torch.nn.Module, layer: int = 0, bias: bool = True) -> np.ndarray:
    """[d_mlp] L2 norm of each neuron's incoming weights (column j of W_in, and b_in[j] when `bias`)."""
    h = hidden_layer(model, layer)
    sq = (h.W_in.double() ** 2).sum(0) + (h.b_in.double() ** 2 if bias else 0)
    return sq.sqrt().numpy()


def predictions(out: torch.Tensor, loss: str) -> torch.Tensor:
    """Predicted class from outputs [..., d_out]: the sign of the one output (hinge), else the argmax."""
    if loss == "hinge":
        return (out[..., 0] > 0).long()
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
        self.full = out.double()
        self.linear = self.h.readout is not None
        if self.linear:
            self.post = self.post.double()
            self.readout = self.h.readout.double()
            self.base = self.full - self.post @ self.readout

    def outputs(self, keep: torch.Tensor) -> torch.Tensor:
        """[N, d_out] outputs with only the units where `keep` [d_mlp] (bool) is True."""
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if self.linear:
            return self.base + self.post[:, keep] @ self.readout[keep]
        mask = keep.to(self.post.dtype)
        with torch.no_grad():
            return self.model.run_with_hooks(self.x, fwd_hooks=[(self.h.hook, lambda act, hook: act * mask)]).double()

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


@dataclass
class EffectiveSparsity:
    """The smallest top-norm subnetwork that reproduces the full network's training accuracy.

    Attributes:
        n_neurons: its size (Merrill et al.'s effective sparsity).
        keep: [d_mlp] bool, the neurons in it.
        order: [d_mlp] neuron indices by decreasing incoming-weight norm.
        norms: [d_mlp] incoming-weight norms.
        full_accuracy: the full network's training accuracy.
        curve: [d_mlp + 1] training accuracy of the top-m subnetwork for m = 0 .. d_mlp (NaN where not evaluated).
    """

    n_neurons: int
    keep: np.ndarray
    order: np.ndarray
    norms: np.ndarray
    full_accuracy: float
    curve: np.ndarray = field(repr=False)


def effective_sparsity(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: str, layer: int = 0,
                       tol: float = 0.0) -> EffectiveSparsity:
    """Fewest neurons, taken by decreasing incoming-weight norm, whose subnetwork reaches the full network's
    accuracy on (x, labels) (the training set), less `tol`.

    x: [N, ...] inputs; labels: [N] class ids. With a linear readout every m is evaluated exactly; otherwise m is
    found by bisection (which assumes accuracy does not fall as neurons are added) and `curve` is NaN elsewhere.
    """
    if labels.dtype != torch.long:
        raise ValueError("effective sparsity needs class labels (accuracy); this task is a regression")
    norms = neuron_norms(model, layer)
    order = np.argsort(-norms, kind="stable")
    ab = Ablator(model, x, layer)
    d = ab.h.d_mlp
    if ab.linear:
        curve = ab.accuracy_curve(order, labels, loss)
        full = curve[-1]
        m = int(np.argmax(curve >= full - tol - 1e-12))
    else:
        curve = np.full(d + 1, np.nan)

        def acc(m: int) -> float:
            if np.isnan(curve[m]):
                keep = torch.zeros(d, dtype=torch.bool)
                keep[torch.as_tensor(order[:m])] = True
                curve[m] = (predictions(ab.outputs(keep), loss) == labels).double().mean().item()
            return curve[m]

        full = acc(d)
        lo, hi = 0, d  # acc(hi) reaches the target; find the smallest such m
        while lo < hi:
            mid = (lo + hi) // 2
            if acc(mid) >= full - tol - 1e-12:
                hi = mid
            else:
                lo = mid + 1
        m = hi
    keep = np.zeros(d, dtype=bool)
    keep[order[:m]] = True
    return EffectiveSparsity(m, keep, order, norms, float(full), curve)


def faithfulness(model: torch.nn.Module, keep: np.ndarray, x: torch.Tensor, labels: torch.Tensor, loss: str,
                 layer: int = 0, n_random: int = 20, seed: int = 0) -> dict[str, float]:
    """How well the subnetwork `keep` [d_mlp] stands in for the full network on (x, labels) (test data).

    faithfulness: fraction of inputs where the subnetwork predicts what the full network predicts.
    random_faithfulness: the same for random subnetworks of the same size (mean over `n_random` draws).
    Also the test accuracy of the subnetwork, of the full network and of the random subnetworks (mean).
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
