"""Stacked networks: M members of one architecture, parameters with a leading member axis.

A network is an :class:`Architecture` (a frozen description) plus a ``params`` dict of tensors
``{"W1": (M, d1, d0), "b1": (M, d1), ...}``. The forward pass runs all members at once with
batched matrix products, so a weight-decay x seed sweep trains as one model (SPEC 1.2, 4.5).

Networks (SPEC 1.2):

* feed-forward: ``a_l = W_l z_{l-1} + b_l``, ``z_l = sigma(a_l)`` for ``l < L``, output ``a_L``;
* residual: ``z_1 = sigma(W_1 x + b_1)``, then blocks
  ``z_l = z_{l-1} + V_l sigma(W_l z_{l-1} + b_l) + c_l`` for ``l = 2..L-1``, output
  ``W_L z_{L-1} + b_L``.

Every weight matrix is a *site* of Theorem A: a linear map ``a = u W^T + b`` whose input ``u``
(the embeddings ``Z_{l-1}`` of the spec) and output ``a`` the forward pass can record.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "Architecture", "Site", "init_params", "forward", "to_module", "from_module", "is_decayed"]

#: name -> (function, Lipschitz constant). The constants enter Lemmas A2 and A3.
ACTIVATIONS = {
    "relu": (F.relu, 1.0),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), 1.0),
    "tanh": (torch.tanh, 1.0),
    "gelu": (F.gelu, 1.1289),  # max of GELU's derivative, 1.12880...
    "softplus": (F.softplus, 1.0),
    "linear": (lambda x: x, 1.0),
}

_MODULE_ACTIVATIONS = {
    torch.nn.ReLU: "relu",
    torch.nn.Tanh: "tanh",
    torch.nn.GELU: "gelu",
    torch.nn.Softplus: "softplus",
    torch.nn.Identity: "linear",
}


def _is_integral(w) -> bool:
    """Whether ``w`` is an integer (int, numpy/torch integer, or a float like 8.0), not 8.5 or "8"."""
    if isinstance(w, str):
        return False
    try:
        return float(w) == int(w)
    except (TypeError, ValueError, OverflowError):
        return False


@dataclass(frozen=True)
class Architecture:
    """Shape of a network, without its parameters.

    Parameters
    ----------
    widths : tuple of int
        ``(d_0, d_1, ..., d_L)``: input dimension, hidden widths, number of outputs.
        Residual networks need equal hidden widths ``d_1 = ... = d_{L-1}``.
    activation : str
        One of ``ACTIVATIONS``.
    bias : bool
        Whether layers have biases.
    residual : bool
        Residual MLP (blocks ``z + V sigma(W z)``) instead of a plain feed-forward MLP.
    """

    widths: tuple[int, ...]
    activation: str = "relu"
    bias: bool = False
    residual: bool = False

    def __post_init__(self):
        try:
            raw = tuple(self.widths)
        except TypeError:
            raise ValueError(f"widths must be a sequence of integers, got {self.widths!r}") from None
        bad = [w for w in raw if isinstance(w, bool) or not _is_integral(w)]
        if bad:
            raise ValueError(f"widths must all be integers, got {bad[0]!r} in {raw!r}")
        widths = tuple(int(w) for w in raw)
        object.__setattr__(self, "widths", widths)
        if len(widths) < 2:
            raise ValueError(f"widths must list at least input and output sizes, got {widths}")
        if any(w < 1 for w in widths):
            raise ValueError(f"widths must all be >= 1, got {widths}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.residual:
            hidden = widths[1:-1]
            if len(hidden) < 2 or len(set(hidden)) != 1:
                raise ValueError(
                    "a residual network needs at least 2 equal hidden widths "
                    f"(input layer + >= 1 block), got widths={widths}"
                )

    @property
    def depth(self) -> int:
        """Number of layers ``L`` (weight matrices ``W_1..W_L``)."""
        return len(self.widths) - 1

    @property
    def num_classes(self) -> int:
        return self.widths[-1]

    @property
    def lipschitz(self) -> float:
        return ACTIVATIONS[self.activation][1]

    def sites(self) -> list[tuple[str, int, int]]:
        """``(name, d_out, d_in)`` of every weight matrix, in forward order."""
        w, L = self.widths, self.depth
        if not self.residual:
            return [(f"W{l}", w[l], w[l - 1]) for l in range(1, L + 1)]
        h = w[1]
        out = [("W1", h, w[0])]
        for l in range(2, L):
            out += [(f"W{l}", h, h), (f"V{l}", h, h)]
        return out + [(f"W{L}", w[L], h)]

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "activation": self.activation,
                "bias": self.bias, "residual": self.residual}


class Site(NamedTuple):
    """One linear map recorded by :func:`forward`: ``output = input @ W^T (+ b)``."""

    name: str
    input: torch.Tensor  # (M, N, d_in)
    output: torch.Tensor  # (M, N, d_out), pre-activation


def is_decayed(name: str, regularize_bias: bool = True) -> bool:
    """Whether weight decay acts on the parameter ``name`` of a stacked parameter dict.

    Weight matrices (``W*``, and the residual blocks' ``V*``) always are; biases (``b*``, ``c*``)
    only with ``regularize_bias`` (Corollary A1 leaves them free).
    """
    return name[0] in "WV" or bool(regularize_bias)


def _bias_name(weight: str) -> str:
    return ("b" if weight[0] == "W" else "c") + weight[1:]


def init_params(arch: Architecture, seeds, *, init_scale: float = 1.0, dtype=torch.float32,
                device="cpu") -> dict[str, torch.Tensor]:
    """Initial parameters for one member per seed, as ``torch.nn.Linear`` initialises them.

    Weights and biases are ``U(-1/sqrt(d_in), 1/sqrt(d_in))`` (PyTorch's default Linear
    initialisation), times ``init_scale``. Each member draws from its own CPU generator seeded
    with its seed, so a member's initialisation does not depend on the other members or on
    the device.
    """
    seeds = [int(s) for s in seeds]
    if init_scale <= 0:
        raise ValueError(f"init_scale must be > 0, got {init_scale}")
    per_member = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        p = {}
        for name, d_out, d_in in arch.sites():
            bound = init_scale / math.sqrt(d_in)
            p[name] = (torch.rand(d_out, d_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            if arch.bias:
                p[_bias_name(name)] = (torch.rand(d_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        per_member.append(p)
    return {k: torch.stack([p[k] for p in per_member]).to(device=device, dtype=dtype)
            for k in per_member[0]}


def _linear(params, name, u):
    # Computed as (W u^T)^T: row-major W times the feature-major input, the output a transposed view
    # that the next layer reads as its feature-major input. Autograd then returns the weight
    # gradient g^T u row-major, W's own layout, so the optimiser updates parameter, gradient and
    # momentum in one fused pass, and every product of a step runs in its fast orientation:
    # benchmarks/bench_product_layouts.py times each product against u W^T with column-major W.
    W = params[name]
    b = params.get(_bias_name(name))
    if b is not None:
        return torch.baddbmm(b.unsqueeze(2), W, u.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(W, u.transpose(1, 2)).transpose(1, 2)


def forward(arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor, *,
            record: bool = False):
    """Run every member on its inputs.

    Parameters
    ----------
    arch : Architecture
    params : dict of Tensor
        Stacked parameters, leading axis ``M``.
    x : Tensor, shape (N, d_0) shared by all members, or (M, N, d_0)
    record : bool
        Also return the list of ``Site`` (input and pre-activation of every weight).

    Returns
    -------
    logits : Tensor, shape (M, N, d_L)
    sites : list of Site, only when ``record=True``
    """
    M = next(iter(params.values())).shape[0]
    if x.ndim == 2:
        x = x.unsqueeze(0).expand(M, -1, -1)
    sigma = ACTIVATIONS[arch.activation][0]
    sites = []

    def lin(name, u):
        a = _linear(params, name, u)
        if record:
            sites.append(Site(name, u, a))
        return a

    L = arch.depth
    if not arch.residual:
        z = x
        for l in range(1, L):
            z = sigma(lin(f"W{l}", z))
        out = lin(f"W{L}", z)
    else:
        z = sigma(lin("W1", x))
        for l in range(2, L):
            z = z + lin(f"V{l}", sigma(lin(f"W{l}", z)))
        out = lin(f"W{L}", z)
    return (out, sites) if record else out


def to_module(arch: Architecture, params: dict[str, torch.Tensor], member: int = 0) -> torch.nn.Module:
    """An ordinary ``torch.nn.Sequential`` holding a copy of one member (feed-forward only)."""
    if arch.residual:
        raise ValueError("to_module supports feed-forward architectures only (residual=False)")
    layers = []
    for l, (name, d_out, d_in) in enumerate(arch.sites(), start=1):
        lin = torch.nn.Linear(d_in, d_out, bias=arch.bias, dtype=params[name].dtype)  # no float32 round trip
        with torch.no_grad():
            lin.weight.copy_(params[name][member])
            if arch.bias:
                lin.bias.copy_(params[_bias_name(name)][member])
        layers.append(lin)
        if l < arch.depth:
            layers.append(_ActivationModule(arch.activation))
    return torch.nn.Sequential(*layers).to(params["W1"].dtype)


class _ActivationModule(torch.nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x):
        return ACTIVATIONS[self.name][0](x)


def from_module(module: torch.nn.Module) -> tuple[Architecture, dict[str, torch.Tensor]]:
    """Read a user's feed-forward ``nn.Sequential`` (Linear / activation / Flatten) into nrc.

    Returns the :class:`Architecture` and stacked parameters with ``M = 1``, so every nrc
    metric (spectra, collapse, the Theorem A bound) applies to a model trained elsewhere.
    """
    linears, acts = [], set()
    for m in module.modules():
        if m is module or isinstance(m, (torch.nn.Sequential, torch.nn.Flatten, torch.nn.Dropout)):
            continue
        if isinstance(m, torch.nn.Linear):
            linears.append(m)
        elif isinstance(m, torch.nn.LeakyReLU):
            if m.negative_slope != 0.1:
                raise ValueError("nrc models LeakyReLU with negative_slope=0.1 only")
            acts.add("leaky_relu")
        elif isinstance(m, _ActivationModule):
            acts.add(m.name)
        elif type(m) in _MODULE_ACTIVATIONS:
            acts.add(_MODULE_ACTIVATIONS[type(m)])
        else:
            raise ValueError(f"from_module: unsupported layer {type(m).__name__}; "
                             "expected Linear, an activation, Flatten or Dropout")
    if not linears:
        raise ValueError("from_module: the module has no Linear layers")
    if len(acts) > 1:
        raise ValueError(f"from_module: mixed activations {sorted(acts)} are not supported")
    biases = {lin.bias is not None for lin in linears}
    if len(biases) > 1:
        raise ValueError("from_module: either all Linear layers have biases or none")
    widths = [linears[0].in_features] + [lin.out_features for lin in linears]
    arch = Architecture(tuple(widths), activation=acts.pop() if acts else "linear", bias=biases.pop())
    params = {}
    for l, lin in enumerate(linears, start=1):
        params[f"W{l}"] = lin.weight.detach().clone().unsqueeze(0)
        if arch.bias:
            params[f"b{l}"] = lin.bias.detach().clone().unsqueeze(0)
    return arch, params
