"""What every model shares: the TransformerLens-style config and interface, activations, the answer loss."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.models.batched import no_dropout
from training.models.tl_compat import HookedConfig
from training.optim.losses import compute_loss

if TYPE_CHECKING:
    from transformer_lens import ActivationCache


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh}


_PLAIN: ContextVar[bool] = ContextVar("plain_models", default=False)


@contextmanager
def plain_models() -> Iterator[None]:
    """Models built inside stay plain (no TransformerLens): training's own copies, which only need their parameters
    and their forward. The bits are those of a hooked model: a hook site is an identity either way."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


class HookSite(nn.Identity):
    """Where a TransformerLens `HookPoint` goes: `setup()` puts one here (an identity too, until a hook is added)."""


@lru_cache(maxsize=None)
def _hooked(cls: type) -> type:
    """`cls` with TransformerLens' `HookedRootModule` behind it (same name: the model still reads as `cls`)."""
    from transformer_lens import HookedRootModule

    return type(cls.__name__, (cls, HookedRootModule), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                                         "__qualname__": cls.__qualname__})


def hook_up(model: "GrokModel") -> None:
    """Make `model` a TransformerLens `HookedRootModule`: each hook site a `HookPoint`, its hook and module
    dictionaries built (`HookedRootModule.setup`). No parameter changes, so its bits do not either."""
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    if not isinstance(model, HookedRootModule):
        for module in list(model.modules()):
            for name, child in list(module._modules.items()):
                if type(child) is HookSite:
                    module._modules[name] = HookPoint()
        model.__class__ = _hooked(type(model))
        model.is_caching, model.context_level = False, 0  # what HookedRootModule.__init__ sets
    HookedRootModule.setup(model)


class GrokModel(nn.Module):
    """What every model shows the probes, whatever its architecture (TransformerLens names):

    - `run_with_cache` returns a TransformerLens `ActivationCache`; `answer_logits(x)` [batch, d_vocab_out] the
      logits at the answer ('='), `logits_at_answer(out)` the same read off a forward's output;
    - `embed_matrix` [d_vocab, d_embed]: token -> what the network reads (the MLP model's per-operand tables side
      by side), `embed_tables` [n_tables, d_vocab, d_model] (one table per operand for the MLP model, else one);
    - `W_U` [d_final, d_vocab_out] and `b_U` [d_vocab_out]: the unembedding (every model has them);
    - the hidden neurons: `n_neuron_layers`, `neuron_hook(layer)` (their `hook_post`), `neuron_activations(x,
      layer)` [batch, d_mlp] at the answer position, `neuron_weights(layer)` (W_in [d_in, d_mlp], b_in [d_mlp])
      and `neuron_readout(layer)` [d_mlp, d_vocab_out] when the logits are affine in them (else None, or with
      `approximate=True` the map ignoring a final LayerNorm's scale); for a
      non-affine read-out `neuron_resid_hook(layer)` and `logits_from_neurons(post, resid)` finish the forward;
    - `attention_hooks`: the `hook_pattern` names (empty without attention).

    A new model is one subclass that fills these in; every probe then works on it unchanged.
    """

    cfg: HookedConfig
    attention_hooks: list[str] = []

    def setup(self) -> None:
        """Called last in every model's `__init__`: a TransformerLens `HookedRootModule` from here on (`hook_up`),
        unless built inside `plain_models()`."""
        if not _PLAIN.get():
            hook_up(self)

    def run_with_cache(self, *args, **kwargs) -> tuple[torch.Tensor, ActivationCache]:
        """(output, ActivationCache): `cache["post", 0]`, `cache.stack_activation("pattern")`, ..."""
        from transformer_lens import ActivationCache

        out, cache = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(dict(cache), self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def listening(self) -> bool:
        """True when any hook is attached (run_with_cache, run_with_hooks): then every activation is computed."""
        hooks = self.__dict__.get("hook_dict", {})  # a plain model (plain_models) has none
        return any(hp._forward_hooks or hp._backward_hooks for hp in hooks.values())

    def as_member(self) -> tuple[dict[str, torch.Tensor], Callable, Callable | None]:
        """This model as a one-member stack for its one forward (`batched_forward`): its parameters [1, ...], its
        dropout (when training) and, when a hook listens, `site(name, x)`, which passes x [1, batch, ...] through
        hook site `name` as TransformerLens' [batch, ...]."""
        params = {name: w.unsqueeze(0) for name, w in self.named_parameters()}
        rate = self.cfg.dropout if self.training else 0.0
        dropout = (lambda x: F.dropout(x, rate, training=True)) if rate > 0 else no_dropout
        site = (lambda name, x: self.get_submodule(name)(x.squeeze(0)).unsqueeze(0)) if self.listening() else None
        return params, dropout, site

    def answer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the logits at the answer (the last position; the only one without positions)."""
        return self(x)

    def scored_logits(self, x: torch.Tensor) -> torch.Tensor:
        """What the task's loss reads (training, evaluation): the forward's output for a model without positions."""
        return self(x)

    def logits_at_answer(self, out: torch.Tensor) -> torch.Tensor:
        """[batch, d_vocab_out] the answer's logits from a forward's output (`run_with_cache`, `run_with_hooks`)."""
        return out[:, -1] if out.ndim == 3 else out

    @property
    def embed_tables(self) -> torch.Tensor:
        return self.embed_matrix[None]

    def _layer(self, layer: int) -> int:
        n = self.n_neuron_layers
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} out of range: the model has {n} hidden layer(s)")
        return layer % n

    def neuron_activations(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """[batch, d_mlp] the neurons of hidden layer `layer` on inputs `x`, at the answer (last) position."""
        name = self.neuron_hook(layer)
        with torch.no_grad():
            _, cache = self.run_with_cache(x, names_filter=name)
        post = cache[name]
        return post[:, -1] if post.ndim == 3 else post

    def neuron_resid_hook(self, layer: int = -1) -> str | None:
        return None

    # what each model fills in (W_U and b_U too, as parameters or views)
    embed_matrix = property(lambda self: _missing(self, "embed_matrix"))
    n_neuron_layers = property(lambda self: _missing(self, "n_neuron_layers"))

    def neuron_hook(self, layer: int = -1) -> str:
        _missing(self, "neuron_hook")

    def neuron_weights(self, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        _missing(self, "neuron_weights")

    def neuron_readout(self, layer: int = -1, approximate: bool = False) -> torch.Tensor | None:
        _missing(self, "neuron_readout")

    def tokens_to_residual_directions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., d_final] the unembedding columns of `tokens` (direct logit attribution directions)."""
        return self.W_U[:, tokens].movedim(0, -1)


def _missing(model: GrokModel, name: str):
    raise NotImplementedError(f"{type(model).__name__} does not define `{name}` of the model interface")


def answer_loss(logits: torch.Tensor, labels: torch.Tensor | None, return_type: str, loss: str = "ce"):
    """`forward`'s return for `return_type` ("logits", "loss", "both" or None): the task's `loss` ("ce", "mse",
    "hinge", "seq_ce", as training computes it, in float64) of the answer (last-position) logits against `labels` [batch]."""
    if return_type == "logits" or return_type is None:
        return logits if return_type else None
    if return_type not in ("loss", "both"):
        raise ValueError(f"return_type must be 'logits', 'loss' or 'both', not {return_type!r}")
    if labels is None:
        raise ValueError("return_type='loss' needs labels: the answers [batch] (e.g. run.data.labels)")
    if loss == "seq_ce":  # sequence tasks: every target position, labels [batch, pos]
        value = compute_loss(logits, labels, loss, float64=True)
    else:
        value = compute_loss(logits if logits.ndim == 2 else logits[:, -1], labels, loss, float64=True)
    return value if return_type == "loss" else (logits, value)
