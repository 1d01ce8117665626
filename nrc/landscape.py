"""Optimality of collapse, loss paths and the class-level reduced problem (SPEC 3.6 B, C, D).

The paper's statements of these results (v2/v3) were NOT FOUND; the constructions here are ours
and test the abstract-level claims 11-13 of SPEC section 6:

* **B, DNC1 optimality** -- :func:`min_norm_weights`, :func:`collapse_costs`,
  :func:`ridge_readout`. Elementary fact: ``{W : W z_i = t_{c(i)}}`` equals
  ``{W : W mu_k = t_k} ∩ {W : W R = 0}``, so the minimum norm can only grow when the inputs of a
  layer are spread within their classes.
* **C, loss paths** -- :func:`descent_path`, :func:`collapse_path`, :func:`path_values`,
  :func:`barrier`, :func:`max_rise`: piecewise-linear paths in parameter space and the
  regularised loss ``L_lambda`` along them.
* **D, forecast** -- :func:`solve_reduced_problem`, :func:`compare_spectra`: the network trained
  on the ``K`` class-mean inputs only (each hidden layer then sees ``K`` points), whose spectra
  forecast those of the network trained on the full data.

Conventions follow ``DESIGN.md``: samples are rows, ``W`` has shape ``(d_out, d_in)``, metrics
are float64. Unlike the rest of ``nrc``, these functions take the parameters of ONE network as a
dict of unstacked tensors ``{"W1": (d1, d0), ...}`` (see :func:`member_params`). Feed-forward
architectures only.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .collapse import class_means, one_hot, within_class
from .models import ACTIVATIONS, Architecture, forward, init_params, is_decayed
from .timing import timed
from .train import member_losses

__all__ = [
    "member_params", "min_norm_weights", "collapse_costs", "ridge_readout", "residual_projector",
    "regularized_objective", "hidden_tcv", "descent_path", "collapse_path", "straight_path",
    "path_values", "waypoint_measures", "barrier", "max_rise", "solve_reduced_problem", "compare_spectra",
    "fit", "objective_and_gradient_norm", "ridge_collapse_values", "group_minima",
]

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# helpers


def _check_feedforward(arch: Architecture):
    if arch.residual:
        raise ValueError("nrc.landscape supports feed-forward architectures only (residual=False)")


def member_params(sweep, member: int, device=None) -> dict[str, torch.Tensor]:
    """Parameters of one member of a trained :class:`nrc.Sweep`, unstacked, float64.

    Parameters
    ----------
    sweep : Sweep
    member : int
        Index of the member in ``sweep.members``.
    device : str or torch.device, optional
        Where to put them (default: CPU). The data passed with them must live there too.

    Returns
    -------
    dict of Tensor
        ``{"W1": (d1, d0), ..., "b1": (d1,), ...}``.
    """
    if not 0 <= member < sweep.num_members:
        raise ValueError(f"member must be in [0, {sweep.num_members - 1}], got {member}")
    if bool(np.asarray(sweep.diverged)[member]):
        raise ValueError(f"member {member} diverged; its parameters are NaN")
    return {k: v[member].detach().to(device or "cpu", _F64).clone() for k, v in sweep.params.items()}


def _stack(params: dict) -> dict:
    return {k: v.unsqueeze(0) for k, v in params.items()}


def _check_params(arch: Architecture, params: dict):
    for name, d_out, d_in in arch.sites():
        if name not in params:
            raise ValueError(f"params lacks {name}")
        if tuple(params[name].shape) != (d_out, d_in):
            raise ValueError(f"{name} must have shape {(d_out, d_in)} (one unstacked network), "
                             f"got {tuple(params[name].shape)}")


def _features(arch: Architecture, params: dict, x: torch.Tensor):
    """Inputs ``U_l`` and pre-activations ``A_l`` of every weight (float64, samples as rows)."""
    _check_feedforward(arch)
    _check_params(arch, params)
    p = _stack({k: v.to(_F64) for k, v in params.items()})
    with torch.no_grad():
        _, sites = forward(arch, p, torch.as_tensor(x).to(_F64), record=True)
    return [s.input[0] for s in sites], [s.output[0] for s in sites]


# ----------------------------------------------------------------------------------------------
# B. minimum-norm weights and the cost of collapse


def min_norm_weights(Z, T, *, rcond: float = 1e-10) -> tuple[torch.Tensor, float]:
    """Minimum-Frobenius-norm ``W`` with ``Z W^T = T`` (least squares if inconsistent).

    Parameters
    ----------
    Z : Tensor, shape (n, d)
        Inputs of the layer, one row per sample (or per class).
    T : Tensor, shape (n, p)
        Required outputs.
    rcond : float
        Relative cut-off of the pseudo-inverse's singular values.

    Returns
    -------
    W : Tensor, shape (p, d), float64
        ``W = (Z^+ T)^T``; its rows lie in the span of the rows of ``Z``.
    residual : float
        ``||Z W^T - T||_F / ||T||_F``: 0 (to rounding) when the constraints are consistent.
    """
    Z = torch.as_tensor(Z).to(_F64)
    T = torch.as_tensor(T).to(_F64)
    if Z.ndim != 2 or T.ndim != 2 or Z.shape[0] != T.shape[0]:
        raise ValueError(f"Z (n, d) and T (n, p) must share n, got {tuple(Z.shape)} and {tuple(T.shape)}")
    if not rcond > 0:
        raise ValueError(f"rcond must be > 0, got {rcond}")
    W = (torch.linalg.pinv(Z, rtol=rcond) @ T).T
    tn = float(T.norm())
    res = float((Z @ W.T - T).norm()) / tn if tn > 0 else float((Z @ W.T).norm())
    return W, res


@timed("analysis")
def collapse_costs(arch: Architecture, params: dict, x, labels, *, rcond: float = 1e-10) -> list[dict]:
    """Downstream minimum-norm costs before and after collapsing the features after layer ``l0``.

    For every hidden layer ``l0 = 1..L-1`` and every downstream weight ``W_l`` (``l > l0``):

    * ``trained``: ``||W_l||_F^2`` of the given network;
    * ``before``: ``min ||W||_F^2`` s.t. ``W U_{l,i} = a_{l,i}`` for every sample ``i`` -- the
      layer reproduces the network's own pre-activations (or logits) from the network's own,
      within-class spread inputs. ``before <= trained``, with equality at a stationary point of
      ``L_lambda`` (there the rows of ``W_l`` lie in the span of its inputs);
    * ``layerwise``: ``min ||W||_F^2`` s.t. ``W mu_{l-1,k} = abar_{l,k}`` for every class ``k``
      (class means of the inputs map to class means of the pre-activations). Since
      ``W U = A`` implies ``W M = Abar`` (average over each class), the feasible set only grows,
      so ``layerwise <= before`` always;
    * ``chain``: the forward-consistent collapsed network. The features after ``l0`` are replaced
      by their class means ``mu_{l0,k}``; then layer by layer ``W~_l`` is the minimum-norm map
      from the collapsed points ``z~_{l-1,k}`` to the network's own class-mean pre-activations
      ``abar_{l,k}`` and ``z~_{l,k} = sigma(abar_{l,k})``; the last layer maps to the class-mean
      logits. This network, fed the collapsed features, outputs exactly the class-mean logits.
      For ``l = l0 + 1`` it equals ``layerwise``; deeper, ``sigma(abar) != mean sigma(a)``
      (Jensen), so ``chain <= before`` is measured, not guaranteed.

    Parameters
    ----------
    arch : Architecture
        Feed-forward, without biases (the costs concern weights only).
    params : dict of Tensor
        One network, unstacked (see :func:`member_params`).
    x : Tensor, shape (N, d_0)
    labels : Tensor of int, shape (N,)
    rcond : float
        Pseudo-inverse cut-off.

    Returns
    -------
    list of dict
        One row per ``(l0, l)`` with ``l0``, ``layer``, ``site``, ``trained``, ``before``,
        ``layerwise``, ``chain``, ``before_residual``, ``chain_residual`` (relative constraint
        residuals; about 0 when the constraints are met) and ``jensen_gap``
        ``||sigma(Abar_{l-1}) - M_{l-1}||_F / ||M_{l-1}||_F`` of the chain's input.
    """
    if arch.bias:
        raise ValueError("collapse_costs needs a network without biases (bias=False)")
    K = arch.num_classes
    U, A = _features(arch, params, x)
    labels = torch.as_tensor(labels).to(U[0].device).long()
    L = arch.depth
    sigma = ACTIVATIONS[arch.activation][0]
    means_in = [class_means(u, labels, K)[0] for u in U]  # M_{l-1}, (K, d_{l-1})
    means_out = [class_means(a, labels, K)[0] for a in A]  # Abar_l, (K, d_l)
    rows = []
    for l0 in range(1, L):
        z_chain = means_in[l0]  # collapsed features after layer l0 (input of weight l0 + 1)
        for l in range(l0 + 1, L + 1):
            j = l - 1
            W = params[f"W{l}"].to(_F64)
            W_b, before_res = min_norm_weights(U[j], A[j], rcond=rcond)
            W_lw, _ = min_norm_weights(means_in[j], means_out[j], rcond=rcond)
            W_ch, chain_res = min_norm_weights(z_chain, means_out[j], rcond=rcond)
            mn = float(means_in[j].norm())
            gap = float((z_chain - means_in[j]).norm()) / mn if mn > 0 else 0.0
            rows.append({"l0": l0, "layer": l, "site": f"W{l}", "trained": float((W * W).sum()),
                         "before": float((W_b * W_b).sum()), "layerwise": float((W_lw * W_lw).sum()),
                         "chain": float((W_ch * W_ch).sum()), "before_residual": before_res,
                         "chain_residual": chain_res, "jensen_gap": gap})
            z_chain = sigma(means_out[j])
    return rows


def ridge_readout(Z, T, weight_decay: float) -> tuple[torch.Tensor, float]:
    """The optimal linear read-out of features ``Z`` for the MSE loss with weight decay.

    Solves ``min_W 1/(2N) ||Z W^T - T||_F^2 + lambda/2 ||W||_F^2`` in closed form,
    ``W = T^T (Z Z^T + lambda N I)^{-1} Z`` with value ``lambda/2 tr(T^T (Z Z^T + lambda N I)^{-1} T)``.

    With ``Z = E M + s R`` (rows: class means plus ``s`` times the within-class residuals) and
    class-level targets ``T = E T_c``, the value is non-decreasing in ``s``: for every ``W``,
    ``||Z W^T - T||^2 = ||E (M W^T - T_c)||^2 + s^2 ||R W^T||^2``, because ``E^T R = 0``
    (residuals sum to zero within each class). Collapse (``s = 0``) is the cheapest.

    Parameters
    ----------
    Z : Tensor, shape (N, d)
    T : Tensor, shape (N, p)
    weight_decay : float
        ``lambda > 0``.

    Returns
    -------
    W : Tensor, shape (p, d), float64
    value : float
        The minimum of the objective.
    """
    Z = torch.as_tensor(Z).to(_F64)
    T = torch.as_tensor(T).to(_F64)
    if not weight_decay > 0:
        raise ValueError(f"weight_decay must be > 0, got {weight_decay}")
    if Z.ndim != 2 or T.ndim != 2 or Z.shape[0] != T.shape[0]:
        raise ValueError(f"Z (N, d) and T (N, p) must share N, got {tuple(Z.shape)} and {tuple(T.shape)}")
    N, d = Z.shape
    if N <= d:  # kernel form: an N x N system
        C = torch.linalg.solve(Z @ Z.T + weight_decay * N * torch.eye(N, dtype=_F64, device=Z.device), T)
        W = (Z.T @ C).T
        value = 0.5 * weight_decay * float((T * C).sum())
    else:  # primal form: a d x d system
        W = torch.linalg.solve(Z.T @ Z + weight_decay * N * torch.eye(d, dtype=_F64, device=Z.device), Z.T @ T).T
        value = float(0.5 * ((Z @ W.T - T) ** 2).sum() / N + 0.5 * weight_decay * (W * W).sum())
    return W, value


def residual_projector(Z, labels, num_classes: int, *, rtol: float = 1e-10) -> torch.Tensor:
    """Orthogonal projector onto the span of the within-class residuals of ``Z``.

    A weight ``W`` collapses the classes of its input (``W z_i = W mu_{c(i)}``) exactly when
    ``W P = 0``; ``W (I - P)`` is the nearest such weight.

    Returns
    -------
    Tensor, shape (d, d), float64
    """
    R = within_class(Z, labels, num_classes)
    if R.ndim != 2:
        raise ValueError("residual_projector takes one feature matrix (N, d)")
    _, s, vh = torch.linalg.svd(R, full_matrices=False)
    r = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    V = vh[:r].T
    return V @ V.T


# ----------------------------------------------------------------------------------------------
# C. loss paths


def regularized_objective(arch: Architecture, params: dict, x, y, weight_decay: float, *,
                          loss: str = "mse", regularize_bias: bool = True) -> torch.Tensor:
    """``L_lambda = L_0 + lambda/2 sum ||W||_F^2`` of one network on the full data (scalar tensor).

    Differentiable in ``params`` (float64 unless the parameters are another dtype).
    """
    _check_params(arch, params)
    p = _stack(params)
    dtype = next(iter(params.values())).dtype
    logits = forward(arch, p, torch.as_tensor(x).to(dtype))
    value = member_losses(logits, torch.as_tensor(y).to(logits.device).long().unsqueeze(0), loss).mean()
    for k, v in params.items():
        if is_decayed(k, regularize_bias):
            value = value + 0.5 * weight_decay * (v * v).sum()
    return value


@timed("analysis")
def hidden_tcv(arch: Architecture, params: dict, x, labels, *, relative: bool = True,
               reduce: str = "sum") -> torch.Tensor:
    """Within-class variability of the hidden layers (differentiable), zero exactly at DNC1.

    Parameters
    ----------
    relative : bool
        ``True``: the scale-free ratio ``tr Sigma_W / tr Sigma_T`` of each hidden layer's
        features ``Z_l = sigma(A_l)``; ``False``: ``TCV_2(Z_l) / N``. The absolute form is not
        invariant under the rescaling ``(W_l, W_{l+1}) -> (c W_l, W_{l+1} / c)`` of ReLU
        networks, so a penalty on it can be lowered by shrinking the early layers alone.
    reduce : {"sum", "max"}
        Sum or maximum over the hidden layers.

    Returns
    -------
    Tensor, shape ()
    """
    _check_params(arch, params)
    if reduce not in ("sum", "max"):
        raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")
    K = arch.num_classes
    dtype = next(iter(params.values())).dtype
    labels = torch.as_tensor(labels).to(next(iter(params.values())).device).long()
    _, sites = forward(arch, _stack(params), torch.as_tensor(x).to(dtype), record=True)
    sigma = ACTIVATIONS[arch.activation][0]
    vals = []
    for s in sites[:-1]:
        z = sigma(s.output[0])
        E = one_hot(labels, K).to(z.dtype)
        counts = E.sum(0).clamp_min(1)
        R = z - E @ ((E.T @ z) / counts[:, None])
        if relative:
            T = z - z.mean(0, keepdim=True)
            vals.append((R * R).sum() / (T * T).sum().clamp_min(torch.finfo(z.dtype).tiny))
        else:
            vals.append((R * R).sum() / z.shape[0])
    if not vals:
        return torch.zeros((), dtype=dtype)
    v = torch.stack(vals)
    return v.sum() if reduce == "sum" else v.max()


def _lbfgs_iterates(params: dict, objective, steps: int, *, values, check_points: int = 4,
                    history_size: int = 50, max_stalls: int = 3) -> list[dict]:
    """Waypoints of a monotone L-BFGS descent of ``objective``.

    ``values(points)`` is ``objective`` of a list of parameter dicts as one stacked evaluation
    (NumPy array): the check points of a step are measured together, the same values as one at
    a time (``tests/test_landscape.py`` checks the paths are unchanged) at a fraction of the
    per-call overhead, which dominated E4's analysis.

    Each L-BFGS step (strong-Wolfe line search) from ``a`` to ``b`` is checked on
    ``check_points`` equally spaced interior points of the segment ``[a, b]``: if the objective
    rises somewhere on that grid, the step is cut back to the last grid point before the first
    rise (and the optimiser restarted there), so the piecewise-linear path through the
    waypoints is non-increasing on the grid. A step that cannot be cut (the objective rises at
    once) or leaves the point unchanged counts as a stall; the optimiser restarts from steepest
    descent, and the run stops after ``max_stalls`` consecutive stalls.
    """
    ps = {k: v.detach().clone().to(_F64).requires_grad_(True) for k, v in params.items()}

    def make():
        return torch.optim.LBFGS(list(ps.values()), lr=1.0, max_iter=1, max_eval=25,
                                 history_size=history_size, tolerance_grad=1e-14,
                                 tolerance_change=1e-18, line_search_fn="strong_wolfe")

    opt = make()

    def closure():
        opt.zero_grad()
        value = objective(ps)
        value.backward()
        return value

    out, stalls = [], 0
    ts = np.linspace(0.0, 1.0, check_points + 2)[1:]
    for _ in range(steps):
        a = {k: v.detach().clone() for k, v in ps.items()}
        opt.step(closure)
        b = {k: v.detach().clone() for k, v in ps.items()}
        if not all(torch.isfinite(v).all() for v in b.values()):
            raise FloatingPointError("L-BFGS produced non-finite parameters")
        moved = not all(torch.equal(a[k], b[k]) for k in a)
        cut = None
        if moved:
            vals = values([a] + [{k: (1 - t) * a[k] + t * b[k] for k in a} for t in ts])
            for i in range(len(ts)):
                if not vals[i + 1] <= vals[i]:
                    cut = 0.0 if i == 0 else float(ts[i - 1])
                    break
        if not moved or cut == 0.0:
            stalls += 1
            with torch.no_grad():
                for k, p in ps.items():
                    p.copy_(a[k])
            if stalls >= max_stalls:
                break
            opt = make()  # restart from steepest descent
            continue
        stalls = 0
        if cut is not None:
            with torch.no_grad():
                for k, p in ps.items():
                    p.copy_((1 - cut) * a[k] + cut * b[k])
            opt = make()
        out.append({k: v.detach().clone() for k, v in ps.items()})
    return out


@timed("analysis")
def descent_path(arch: Architecture, params: dict, x, y, weight_decay: float, *, loss: str = "mse",
                 steps: int = 200, check_points: int = 4, regularize_bias: bool = True) -> list[dict]:
    """Waypoints of a descent path of ``L_lambda``: the start and each L-BFGS iterate.

    Returns
    -------
    list of dict
        Parameter dicts (float64), the first being ``params``. Consecutive waypoints are joined
        by straight segments; measure the loss along them with :func:`path_values`.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    start = {k: v.detach().to(_F64).clone() for k, v in params.items()}
    obj = lambda p: regularized_objective(arch, p, x, y, weight_decay, loss=loss,  # noqa: E731
                                          regularize_bias=regularize_bias)
    values = lambda pts: _objectives(arch, pts, x, y, weight_decay, loss, regularize_bias)  # noqa: E731
    return [start] + _lbfgs_iterates(start, obj, steps, values=values, check_points=check_points)


@timed("analysis")
def collapse_path(arch: Architecture, params: dict, x, y, weight_decay: float, *,
                  penalties=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0), steps_per_penalty: int = 100,
                  loss: str = "mse", check_points: int = 4,
                  regularize_bias: bool = True) -> tuple[list[dict], list[float]]:
    """Waypoints of a collapse path: continuation on ``L_lambda + rho * sum_l tr Sigma_W / tr Sigma_T``.

    For each ``rho`` in ``penalties`` (increasing), L-BFGS runs ``steps_per_penalty`` iterations
    warm-started from the previous point; every iterate is a waypoint. As ``rho`` grows the hidden
    features collapse to their class means (DNC1) while ``L_lambda`` stays as small as the penalty
    allows: for exact minimisers, ``L_lambda`` along the continuation can only grow, by at most
    ``min_DNC1 L_lambda - L_lambda(start)``, which is <= 0 when DNC1 configurations are globally
    optimal (claim 11).

    Returns
    -------
    waypoints : list of dict
        The start, then every iterate.
    rhos : list of float
        The penalty in force at each waypoint (0 for the start).
    """
    rhos = [float(r) for r in penalties]
    if not rhos or any(not r > 0 for r in rhos) or any(b <= a for a, b in zip(rhos, rhos[1:])):
        raise ValueError(f"penalties must be positive and strictly increasing, got {penalties}")
    if steps_per_penalty < 1:
        raise ValueError(f"steps_per_penalty must be >= 1, got {steps_per_penalty}")
    current = {k: v.detach().to(_F64).clone() for k, v in params.items()}
    points, at = [current], [0.0]
    for rho in rhos:
        def obj(p, rho=rho):
            return (regularized_objective(arch, p, x, y, weight_decay, loss=loss,
                                          regularize_bias=regularize_bias)
                    + rho * hidden_tcv(arch, p, x, y, relative=True))

        def values(pts, rho=rho):
            return _objectives(arch, pts, x, y, weight_decay, loss, regularize_bias, rho=rho)
        its = _lbfgs_iterates(current, obj, steps_per_penalty, values=values, check_points=check_points)
        points += its
        at += [rho] * len(its)
        if its:
            current = its[-1]
    return points, at


def straight_path(p0: dict, p1: dict, num: int = 2) -> list[dict]:
    """``num`` equally spaced points of the segment ``(1 - t) p0 + t p1``, ``t`` in [0, 1]."""
    if set(p0) != set(p1):
        raise ValueError("p0 and p1 must have the same parameter names")
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    ts = np.linspace(0.0, 1.0, num)
    return [{k: (1 - t) * p0[k].to(_F64) + t * p1[k].to(_F64) for k in p0} for t in ts]


@timed("analysis")
def path_values(arch: Architecture, waypoints: list[dict], x, y, weight_decay: float, *,
                loss: str = "mse", substeps: int = 4, regularize_bias: bool = True) -> dict:
    """``L_lambda`` along the piecewise-linear path through ``waypoints``.

    Every segment is evaluated at ``substeps`` interior points besides its ends, so the values
    describe the continuous path, not only its waypoints.

    Returns
    -------
    dict of numpy arrays
        ``s`` (normalised arc length in parameter space, 0..1), ``value`` (``L_lambda``),
        ``waypoint`` (index of the segment's start waypoint), ``is_waypoint`` (bool).
    """
    if len(waypoints) < 1:
        raise ValueError("waypoints must be non-empty")
    if substeps < 0:
        raise ValueError(f"substeps must be >= 0, got {substeps}")

    def dist(a, b):
        return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))

    _check_params(arch, waypoints[0])
    s_vals, points, seg, is_wp = [0.0], [waypoints[0]], [0], [True]
    length = 0.0
    for i in range(len(waypoints) - 1):
        a, b = waypoints[i], waypoints[i + 1]
        d = dist(a, b)
        for t in np.linspace(0, 1, substeps + 2)[1:]:
            s_vals.append(length + t * d)
            points.append({k: (1 - t) * a[k] + t * b[k] for k in a})
            seg.append(i)
            is_wp.append(bool(t == 1.0))
        length += d
    s = np.asarray(s_vals)
    if length > 0:
        s = s / length
    values = _objectives(arch, points, x, y, weight_decay, loss, regularize_bias)
    if not np.all(np.isfinite(values)):
        raise FloatingPointError("non-finite loss along the path")
    return {"s": s, "value": values, "waypoint": np.asarray(seg), "is_waypoint": np.asarray(is_wp)}


def _stacked_terms(arch: Architecture, points: list[dict], x, y, weight_decay: float, loss: str,
                   regularize_bias: bool, *, ratios: bool, chunk: int = 256):
    """``L_lambda`` of many networks (:func:`regularized_objective`) and, with ``ratios``, each hidden
    layer's ``tr Sigma_W / tr Sigma_T`` (:func:`hidden_tcv` with ``relative=True``), shape
    (hidden layers, P): one stacked forward pass per ``chunk`` networks instead of one call each,
    whose Python and dispatch overhead dominated E4's analysis. The same arithmetic per network,
    so the same values (``tests/test_landscape.py`` checks it bitwise)."""
    dtype = next(iter(points[0].values())).dtype
    x = torch.as_tensor(x).to(dtype)
    labels = torch.as_tensor(y).to(x.device).long()
    E = one_hot(labels, arch.num_classes).to(dtype)
    counts = E.sum(0).clamp_min(1)
    sigma = ACTIVATIONS[arch.activation][0]
    values, layer_ratios = [], []
    with torch.no_grad():
        for start in range(0, len(points), chunk):
            part = points[start:start + chunk]
            stacked = {k: torch.stack([p[k] for p in part]) for k in part[0]}
            logits, sites = forward(arch, stacked, x, record=True)
            value = member_losses(logits, labels.unsqueeze(0).expand(len(part), -1), loss).mean(1)
            for k, v in stacked.items():
                if is_decayed(k, regularize_bias):
                    value = value + 0.5 * weight_decay * (v * v).flatten(1).sum(1)
            values.append(value)
            if ratios:
                per_layer = []
                for s in sites[:-1]:
                    z = sigma(s.output)
                    R = z - E @ ((E.T @ z) / counts[:, None])
                    T = z - z.mean(1, keepdim=True)
                    per_layer.append((R * R).sum((1, 2)) / (T * T).sum((1, 2)).clamp_min(torch.finfo(z.dtype).tiny))
                layer_ratios.append(torch.stack(per_layer) if per_layer else torch.zeros(0, len(part), dtype=dtype))
    return torch.cat(values), (torch.cat(layer_ratios, 1) if ratios else None)


def _objectives(arch, points, x, y, weight_decay, loss, regularize_bias, *, rho: float = 0.0) -> np.ndarray:
    """The objective of :func:`descent_path` (``rho = 0``) or of :func:`collapse_path` at penalty
    ``rho`` for every network in ``points`` (NumPy array)."""
    value, ratios = _stacked_terms(arch, points, x, y, weight_decay, loss, regularize_bias, ratios=rho > 0)
    if rho > 0 and len(ratios):
        value = value + rho * ratios.sum(0)
    return value.cpu().numpy()


@timed("analysis")
def waypoint_measures(arch: Architecture, waypoints: list[dict], x, y, weight_decay: float, *,
                      loss: str = "mse", regularize_bias: bool = True) -> dict:
    """``L_lambda`` and the largest hidden ``tr Sigma_W / tr Sigma_T`` at every waypoint.

    The values of :func:`regularized_objective` and of :func:`hidden_tcv` with
    ``relative=True, reduce="max"``, computed for all waypoints in stacked passes.

    Returns
    -------
    dict of numpy arrays
        ``L_lambda`` and ``tcv_ratio``, one entry per waypoint (``tcv_ratio`` is 0 without
        hidden layers, as :func:`hidden_tcv`).
    """
    if len(waypoints) < 1:
        raise ValueError("waypoints must be non-empty")
    _check_params(arch, waypoints[0])
    value, ratios = _stacked_terms(arch, waypoints, x, y, weight_decay, loss, regularize_bias, ratios=True)
    ratio = ratios.max(0).values if len(ratios) else torch.zeros_like(value)
    return {"L_lambda": value.cpu().numpy(), "tcv_ratio": ratio.cpu().numpy()}


def barrier(values) -> float:
    """Loss barrier of a path from its start: ``max_t L(t) - L(0)`` (<= 0: never above the start)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("values must be non-empty")
    return float(v.max() - v[0])


def max_rise(values) -> float:
    """Largest increase along a path, ``max_{s <= t} L(t) - L(s)`` (0 iff non-increasing)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("values must be non-empty")
    return float(np.max(v - np.minimum.accumulate(v)))


# ----------------------------------------------------------------------------------------------
# D. the class-level reduced problem


@timed("analysis")
def solve_reduced_problem(arch: Architecture, inputs, weights, weight_decay: float, *,
                          loss: str = "mse", restarts: int = 4, steps: int = 2000, seed: int = 0,
                          init_scale: float = 1.0, regularize_bias: bool = True) -> list[dict]:
    """Train the network on ``K`` class-level points only: the DNC1-reduced problem.

    Minimises ``sum_k w_k loss(f(u_k), k) + lambda/2 sum ||W||_F^2`` by full-batch L-BFGS in
    float64 from ``restarts`` random initialisations. If the inputs of the full problem were
    exactly collapsed (``x_i = u_{c(i)}``) and ``w_k = n_k / N``, this would be the full
    problem's objective exactly; with spread inputs it is a forecast made before training.

    Parameters
    ----------
    arch : Architecture
        Feed-forward; ``arch.num_classes == K``.
    inputs : Tensor, shape (K, d_0)
        One input per class (e.g. the class means ``mu_{0,k}``); class ``k`` is row ``k``.
    weights : array_like, shape (K,)
        Class weights ``w_k >= 0`` (e.g. ``n_k / N``), summing to 1.
    weight_decay : float
    loss : {"mse", "ce"}
    restarts : int
        Random initialisations (PyTorch's default Linear initialisation, seeds
        ``seed, seed + 1, ...``).
    steps : int
        L-BFGS iterations per restart.

    Returns
    -------
    list of dict, sorted by ``value`` (best first)
        ``params`` (unstacked float64), ``value`` (the reduced ``L_lambda``), ``grad_norm``
        (``||grad||`` at the end), ``restart``.
    """
    _check_feedforward(arch)
    K = arch.num_classes
    u = torch.as_tensor(inputs).to(_F64)
    if u.shape != (K, arch.widths[0]):
        raise ValueError(f"inputs must have shape (K, d_0) = {(K, arch.widths[0])}, got {tuple(u.shape)}")
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64), device=u.device)
    if w.shape != (K,) or bool((w < 0).any()) or abs(float(w.sum()) - 1) > 1e-9:
        raise ValueError("weights must be K non-negative numbers summing to 1")
    if restarts < 1 or steps < 1:
        raise ValueError(f"restarts and steps must be >= 1, got {restarts}, {steps}")
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be 'mse' or 'ce', got {loss!r}")
    y = torch.arange(K, device=u.device)

    def objective(p):
        logits = forward(arch, _stack(p), u)
        value = (member_losses(logits, y.unsqueeze(0), loss)[0] * w).sum()
        for k, v in p.items():
            if is_decayed(k, regularize_bias):
                value = value + 0.5 * weight_decay * (v * v).sum()
        return value

    sols = []
    for r in range(restarts):
        init = init_params(arch, [seed + r], init_scale=init_scale, dtype=_F64, device=u.device)
        ps = {k: v[0].clone().requires_grad_(True) for k, v in init.items()}
        opt = torch.optim.LBFGS(list(ps.values()), lr=1.0, max_iter=steps, max_eval=4 * steps,
                                history_size=50, tolerance_grad=1e-14, tolerance_change=1e-18,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = objective(ps)
            value.backward()
            return value

        opt.step(closure)
        value = objective(ps)
        grads = torch.autograd.grad(value, list(ps.values()))
        gn = math.sqrt(sum(float((g * g).sum()) for g in grads))
        if not math.isfinite(float(value.detach())):
            raise FloatingPointError(f"restart {r}: non-finite reduced objective")
        sols.append({"params": {k: v.detach().clone() for k, v in ps.items()}, "value": float(value.detach()),
                     "grad_norm": gn, "restart": r})
    return sorted(sols, key=lambda s: s["value"])


@timed("analysis")
def compare_spectra(s_forecast, s_trained, *, tol: float = 1e-2) -> dict:
    """Compare a forecast spectrum with a trained one.

    Parameters
    ----------
    s_forecast, s_trained : array_like
        Singular values (descending) of the same weight matrix.
    tol : float
        Relative threshold of "non-zero": ``s_j > tol * s_1`` (``rank_tau``, SPEC 2.4).

    Returns
    -------
    dict
        ``rank_forecast``, ``rank_trained``, ``rank_match`` (bool), ``rel_error``: the largest
        ``|s_j^trained - s_j^forecast| / s_j^forecast`` over the forecast's non-zero values, and
        ``rel_error_norm``: ``||s^trained_{1:r} - s^forecast_{1:r}|| / ||s^forecast_{1:r}||``
        with ``r = rank_forecast``.
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}")
    sf = np.sort(np.asarray(s_forecast, dtype=np.float64))[::-1]
    st = np.sort(np.asarray(s_trained, dtype=np.float64))[::-1]
    if sf.shape != st.shape:
        raise ValueError(f"spectra must have equal length, got {sf.shape} and {st.shape}")
    rf = int(np.sum(sf > tol * sf[0])) if sf[0] > 0 else 0
    rt = int(np.sum(st > tol * st[0])) if st[0] > 0 else 0
    if rf == 0:
        return {"rank_forecast": 0, "rank_trained": rt, "rank_match": rt == 0,
                "rel_error": float("nan"), "rel_error_norm": float("nan")}
    a, b = sf[:rf], st[:rf]
    return {"rank_forecast": rf, "rank_trained": rt, "rank_match": rf == rt,
            "rel_error": float(np.max(np.abs(b - a) / a)),
            "rel_error_norm": float(np.linalg.norm(b - a) / np.linalg.norm(a))}


# ----------------------------------------------------------------------------------------------
# E. measurements of one network shared by the landscape notebooks (E4, E4b, E5)


def fit(arch: Architecture, params: dict, x, y, *, loss: str = "mse") -> dict:
    """Training accuracy and mean unregularised loss of one network on ``(x, y)``.

    Parameters
    ----------
    arch : Architecture
    params : dict of Tensor
        One unstacked network (:func:`member_params`); ``x`` must share its device and dtype.
    x : Tensor, shape (N, d_0)
    y : Tensor, shape (N,)
        Class labels.
    loss : {"mse", "ce"}

    Returns
    -------
    dict
        ``train_acc`` (fraction of ``argmax f(x_i) == y_i``) and ``train_loss`` (mean of the
        per-sample loss, :func:`nrc.member_losses`).
    """
    with torch.no_grad():
        logits = forward(arch, _stack(params), x)[0]
    return {"train_acc": float((logits.argmax(1) == y).double().mean()),
            "train_loss": float(member_losses(logits[None], y[None], loss).mean())}


def objective_and_gradient_norm(arch: Architecture, params: dict, x, y, weight_decay: float, *,
                                loss: str = "mse") -> tuple[float, float]:
    """``L_lambda`` of one network (:func:`regularized_objective`) and the Euclidean norm of its gradient.

    The gradient is taken with respect to every parameter tensor (weights and biases) of a copy of
    ``params``; ``params`` itself is left untouched. 0 at an exact stationary point.

    Returns
    -------
    value : float
    grad_norm : float
        ``sqrt(sum_k ||d L_lambda / d theta_k||^2)``.
    """
    p_grad = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    value = regularized_objective(arch, p_grad, x, y, weight_decay, loss=loss)
    grads = torch.autograd.grad(value, list(p_grad.values()))
    return float(value.detach()), float(torch.sqrt(sum((g ** 2).sum() for g in grads)))


def ridge_collapse_values(Z, labels, num_classes: int, weight_decay: float, factors) -> list[float]:
    """The ridge read-out value ``V(s)`` of the features ``E M + s R`` for every factor ``s``.

    ``Z`` is split into its class means ``M`` (rows of ``E M``, ``E`` the one-hot label matrix) and
    within-class residuals ``R = Z - E M``; for each ``s`` the value of :func:`ridge_readout` with
    one-hot targets ``E`` is returned. ``s = 1`` are the features themselves, ``s = 0`` their
    collapse; ``V`` is non-decreasing in ``s`` (see :func:`ridge_readout`).

    Parameters
    ----------
    Z : Tensor, shape (N, d)
    labels : Tensor, shape (N,)
    num_classes : int
    weight_decay : float
        ``lambda > 0``.
    factors : iterable of float

    Returns
    -------
    list of float, one per factor (in the order given)
    """
    Z = torch.as_tensor(Z).to(_F64)
    E = one_hot(labels, num_classes).to(Z.device)
    M, _ = class_means(Z, labels, num_classes)
    R = Z - E @ M
    return [ridge_readout(E @ M + s * R, E, weight_decay)[1] for s in factors]


def group_minima(solutions: list[dict], rtol: float) -> list[list[dict]]:
    """Group solutions sorted by ``value`` into distinct minima.

    A new group starts where the value differs from the first (best) value of the current group
    by more than ``rtol`` times its magnitude; within a group the order is kept, so ``group[0]``
    is its best solution.

    Parameters
    ----------
    solutions : list of dict
        Each with a ``"value"``, sorted ascending (as :func:`solve_reduced_problem` returns them).
    rtol : float
        Relative gap of the value that separates two minima.

    Returns
    -------
    list of list of dict
    """
    groups: list[list[dict]] = []
    for s in solutions:
        if groups and abs(s["value"] - groups[-1][0]["value"]) <= rtol * abs(groups[-1][0]["value"]):
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups
