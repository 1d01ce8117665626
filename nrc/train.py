"""The stacked sweep trainer: M members of one architecture trained as one model.

Members differ in their scalars (``weight_decay``, ``seed``, ``lr``) and, optionally, in their
data set (e.g. a sweep over the within-class spread). Each member's gradient is exactly its solo
gradient, because the total loss is the *sum* of the members' mean losses and members share no
parameter; each member draws its own initialisation and minibatch order from generators seeded
with its own seed. So a member's trajectory does not depend on which other members it is stacked
with (tests/test_train.py checks this against independently trained ``nn.Module`` models).

Optimiser (SPEC 1.2, 4.5): SGD with momentum and *coupled* L2 weight decay -- the gradient of
``lambda/2 ||W||_F^2`` is added to the loss gradient, exactly as ``torch.optim.SGD(weight_decay=)``
does -- so fixed points are stationary points of the regularised loss (AdamW's are not). An
optional full-batch refinement (gradient descent or L-BFGS, in float64) then drives each member
close to a stationary point, because Theorem A is about stationary points.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset
from .models import Architecture, forward, init_params, is_decayed

__all__ = ["TrainConfig", "Sweep", "grid", "train", "member_losses", "data_order", "regularized_loss"]

MEMBER_KEYS = ("weight_decay", "seed", "lr")
LOSSES = ("ce", "mse")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the swept member scalars.

    Parameters
    ----------
    loss : {"ce", "mse"}
        Cross-entropy, or ``1/2 ||f(x) - onehot(y)||^2`` averaged over samples (SPEC 1.2).
    epochs : int
        Passes over the training set with minibatch SGD (0 allowed: refinement only).
    batch_size : int
        Minibatch size per member (capped at the training-set size).
    lr : float
        Learning rate, used for members that do not set their own ``lr``.
    momentum : float
        Heavy-ball momentum in [0, 1).
    schedule : {"cosine", "constant"}
        Learning-rate schedule over all SGD steps.
    regularize_bias : bool
        Apply weight decay to biases too (the spec's regularised objective says to state it).
    init_scale : float
        Multiplier of PyTorch's default Linear initialisation.
    refine : {"none", "gd", "lbfgs"}
        Full-batch refinement of the regularised loss after SGD.
    refine_steps : int
        Iterations of the refinement.
    refine_lr : float
        Step size of the ``"gd"`` refinement.
    refine_dtype : {"float64", "float32"}
        Precision of the refinement (float64 reaches far smaller gradient residuals).
    refine_snapshots : tuple of int
        L-BFGS budgets below ``refine_steps`` (0: SGD alone) whose results are kept as well:
        :meth:`Sweep.refined_at` gives, for each, exactly what a separate run with that
        ``refine_steps`` gives, from one refinement (see ``_lbfgs_member``). L-BFGS only.
    checkpoint_every : int
        Epochs between checkpoints when a checkpoint path is given.
    """

    loss: str = "ce"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    regularize_bias: bool = True
    init_scale: float = 1.0
    refine: str = "none"
    refine_steps: int = 0
    refine_lr: float = 0.1
    refine_dtype: str = "float64"
    refine_snapshots: tuple = ()
    checkpoint_every: int = 10

    def __post_init__(self):
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.schedule in ("cosine", "constant"),
             f"schedule must be 'cosine' or 'constant', got {self.schedule!r}"),
            (self.init_scale > 0, f"init_scale must be > 0, got {self.init_scale}"),
            (self.refine in ("none", "gd", "lbfgs"),
             f"refine must be one of 'none', 'gd', 'lbfgs', got {self.refine!r}"),
            (self.refine_steps >= 0, f"refine_steps must be >= 0, got {self.refine_steps}"),
            (self.refine_lr > 0, f"refine_lr must be > 0, got {self.refine_lr}"),
            (self.refine_dtype in ("float64", "float32"),
             f"refine_dtype must be 'float64' or 'float32', got {self.refine_dtype!r}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        snaps = self.refine_snapshots
        if snaps:
            if isinstance(snaps, (str, bytes)) or not all(_is_int(b) for b in snaps):
                raise ValueError(f"refine_snapshots must be a sequence of integer budgets, got {snaps!r}")
            snaps = tuple(sorted({int(b) for b in snaps}))
            if self.refine != "lbfgs" or not 0 <= snaps[0] <= snaps[-1] < self.refine_steps:
                raise ValueError(f"refine_snapshots must lie in [0, refine_steps) = [0, {self.refine_steps}) "
                                 f"with refine='lbfgs', got {list(snaps)} with refine={self.refine!r}")
        object.__setattr__(self, "refine_snapshots", tuple(snaps))

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.refine_snapshots:
            # a configuration without snapshots keeps the cache key it had before the field existed
            del d["refine_snapshots"]
        else:
            d["refine_snapshots"] = list(self.refine_snapshots)
        return d


@dataclass
class Sweep:
    """Result of :func:`train`: stacked parameters plus what happened to every member."""

    arch: Architecture
    config: TrainConfig
    members: list[dict]
    params: dict[str, torch.Tensor]  # on the CPU
    history: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (epochs, M)
    diverged: np.ndarray = None  # (M,) bool
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def num_members(self) -> int:
        return len(self.members)

    def weight_decays(self) -> torch.Tensor:
        return torch.tensor([m["weight_decay"] for m in self.members], dtype=torch.float64)

    def select(self, index) -> "Sweep":
        """A sub-sweep with the members at ``index`` (list of ints or boolean mask)."""
        idx = np.arange(self.num_members)[np.asarray(index)]
        t = torch.as_tensor(idx, dtype=torch.long)
        return Sweep(self.arch, self.config, [self.members[i] for i in idx],
                     {k: v[t] for k, v in self.params.items()},
                     {k: v[:, idx] for k, v in self.history.items()},
                     self.diverged[idx], self.seconds, self.device)

    def refined_at(self, budget: int) -> "Sweep":
        """The sweep a separate run with ``refine_steps=budget`` gives (equal parameters, losses and
        divergence flags), for ``budget`` in ``config.refine_snapshots`` or ``config.refine_steps``.

        ``seconds`` is this sweep's: the snapshots cost no separate training.
        """
        budget = int(budget)
        snaps = self.config.refine_snapshots
        if budget not in snaps and budget != self.config.refine_steps:
            raise ValueError(f"budget must be one of {[*snaps, self.config.refine_steps]}, got {budget}")
        base = {k: v for k, v in self.history.items() if not k.startswith("snapshot_")}
        if budget == self.config.refine_steps:
            config = replace(self.config, refine_snapshots=())
            return Sweep(self.arch, config, self.members, self.params, base, self.diverged, self.seconds, self.device)
        flat = torch.from_numpy(np.ascontiguousarray(self.history[f"snapshot_{budget}_params"].T))  # (M, P)
        params, off = {}, 0
        for k, v in self.params.items():
            n = math.prod(v.shape[1:])
            params[k] = flat[:, off:off + n].reshape(v.shape).clone()
            off += n
        history = {"loss": base["loss"]}
        if budget == 0:  # SGD alone: float32 parameters (stored exactly in float64), NaN where SGD diverged
            config = replace(self.config, refine="none", refine_steps=0, refine_snapshots=())
            params = {k: v.float() for k, v in params.items()}
            diverged = ~torch.isfinite(flat).all(1).numpy()
        else:
            config = replace(self.config, refine_steps=budget, refine_snapshots=())
            params = {k: v.to(getattr(torch, config.refine_dtype)) for k, v in params.items()}
            history["refine_loss"] = self.history[f"snapshot_{budget}_loss"]
            diverged = ~np.isfinite(history["refine_loss"][0])
        return Sweep(self.arch, config, self.members, params, history, diverged, self.seconds, self.device)


def grid(**axes) -> list[dict]:
    """All combinations of the given member scalars, e.g. ``grid(weight_decay=[0, 1e-3], seed=[0, 1])``.

    The last axis varies fastest. Scalars given as a single value are broadcast.
    """
    names = list(axes)
    values = [v if isinstance(v, (list, tuple, np.ndarray)) else [v] for v in axes.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _validate_members(members: list[dict], config: TrainConfig) -> list[dict]:
    if not members:
        raise ValueError("members must contain at least one member")
    out = []
    for i, m in enumerate(members):
        unknown = set(m) - set(MEMBER_KEYS) - {"data"}
        if unknown:
            raise ValueError(f"member {i}: unknown scalar(s) {sorted(unknown)}; allowed: {MEMBER_KEYS}")
        if "weight_decay" not in m:
            raise ValueError(f"member {i}: weight_decay is required")
        wd, lr = float(m["weight_decay"]), float(m.get("lr", config.lr))
        if not wd >= 0:
            raise ValueError(f"member {i}: weight_decay must be >= 0, got {m['weight_decay']}")
        if not lr > 0:
            raise ValueError(f"member {i}: lr must be > 0, got {m.get('lr')}")
        out.append({"weight_decay": wd, "seed": int(m.get("seed", 0)), "lr": lr})
    return out


def data_order(seed: int) -> torch.Generator:
    """The CPU generator that draws a member's minibatch order (one permutation per epoch).

    Offset from the initialisation generator's seed so the two streams differ.
    """
    return torch.Generator().manual_seed((int(seed) * 2654435761 + 97) % (2**63))


def _stack_data(data, M: int, device, dtype):
    """Training tensors: x (N, d) or (M, N, d), y (N,) or (M, N), and K."""
    if isinstance(data, Dataset):
        return (data.x_train.to(device, dtype), data.y_train.to(device), data.num_classes)
    data = list(data)
    if len(data) != M:
        raise ValueError(f"got {len(data)} data sets for {M} members; give one, or one per member")
    sizes = {d.x_train.shape for d in data}
    if len(sizes) != 1:
        raise ValueError(f"per-member data sets must have equal shapes, got {sorted(sizes)}")
    x = torch.stack([d.x_train for d in data]).to(device, dtype)
    y = torch.stack([d.y_train for d in data]).to(device)
    return x, y, data[0].num_classes


def _take(t: torch.Tensor, idx: torch.Tensor, per_member: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``idx`` (M, B) of ``t`` ((N, ...) shared, or (M, N, ...) per member) as an (M, B, ...) tensor.

    With ``out`` the rows are gathered into that preallocated buffer (no allocation per step).
    """
    M, B = idx.shape
    if per_member:
        N = t.shape[1]
        flat = (idx + N * torch.arange(M, device=idx.device).unsqueeze(1)).reshape(-1)
        src = t.reshape((M * N,) + tuple(t.shape[2:]))
    else:
        flat, src = idx.reshape(-1), t
    if out is None:
        return torch.index_select(src, 0, flat).view((M, B) + tuple(t.shape[(2 if per_member else 1):]))
    torch.index_select(src, 0, flat, out=out.view((M * B,) + tuple(out.shape[2:])))
    return out


def member_losses(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample losses, shape (M, B), for logits (M, B, K) and labels (M, B)."""
    M, B, K = logits.shape
    if loss == "ce":
        return F.cross_entropy(logits.reshape(M * B, K), y.reshape(-1), reduction="none").view(M, B)
    target = F.one_hot(y, K).to(logits.dtype)
    return 0.5 * ((logits - target) ** 2).sum(-1)


def _decay_mask(arch: Architecture, config: TrainConfig, names) -> dict[str, bool]:
    return {k: is_decayed(k, config.regularize_bias) for k in names}


def regularized_loss(arch, params, x, y, weight_decay, loss, regularize_bias=True):
    """Per-member regularised loss ``L_0 + lambda/2 sum ||W||_F^2`` over the full data, shape (M,)."""
    logits = forward(arch, params, x)
    yy = y if y.ndim == 2 else y.unsqueeze(0).expand(logits.shape[0], -1)
    value = member_losses(logits, yy, loss).mean(1)
    for k, p in params.items():
        if is_decayed(k, regularize_bias):
            value = value + 0.5 * weight_decay.to(p.dtype) * p.flatten(1).pow(2).sum(1)
    return value


def _progress_enabled(progress) -> bool:
    if progress is not None:
        return bool(progress)
    return os.environ.get("NRC_PROGRESS", "1") != "0"


def _atomic_save(obj, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(arch: Architecture, data, members: list[dict], config: TrainConfig = TrainConfig(), *,
          device=None, checkpoint=None, progress=None, callback=None) -> Sweep:
    """Train all members as one stacked model.

    Parameters
    ----------
    arch : Architecture
    data : Dataset, or a list of Dataset (one per member, equal shapes)
    members : list of dict
        Member scalars: ``weight_decay`` (required, >= 0), ``seed`` (default 0), ``lr``
        (default ``config.lr``). See :func:`grid`.
    config : TrainConfig
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    checkpoint : path, optional
        Where to save the training state every ``config.checkpoint_every`` epochs. If the file
        exists and was written for the same arch/config/members, training resumes from it. It
        is deleted once training finishes.
    progress : bool, optional
        Progress bar over epochs; default on unless ``NRC_PROGRESS=0`` (set by the runner).
    callback : callable, optional
        ``callback(epoch, params, diverged)`` after each epoch (e.g. to track NC1 over time).

    Returns
    -------
    Sweep
        Parameters on the CPU (float32, or ``refine_dtype`` after a refinement); a member whose
        loss became NaN/inf is marked in ``diverged`` and its parameters are NaN.
    """
    members = _validate_members(members, config)
    M = len(members)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if arch.widths[-1] < 2:
        raise ValueError("the output width (number of classes) must be >= 2")
    x, y, K = _stack_data(data, M, device, torch.float32)
    if K != arch.num_classes:
        raise ValueError(f"the data have {K} classes but the network has {arch.num_classes} outputs")
    if x.shape[-1] != arch.widths[0]:
        raise ValueError(f"the data have dimension {x.shape[-1]} but widths[0] = {arch.widths[0]}")
    per_member = x.ndim == 3
    N = x.shape[-2]
    B = min(config.batch_size, N)
    steps = N // B
    total_steps = max(1, config.epochs * steps)

    wd = torch.tensor([m["weight_decay"] for m in members], device=device)
    base_lr = torch.tensor([m["lr"] for m in members], device=device)
    params = init_params(arch, [m["seed"] for m in members], init_scale=config.init_scale, device=device)
    decay = _decay_mask(arch, config, params)
    bufs = {k: torch.zeros_like(p) for k, p in params.items()}
    gens = [data_order(m["seed"]) for m in members]
    diverged = torch.zeros(M, dtype=torch.bool, device=device)
    history = {"loss": []}
    start_epoch, step = 0, 0
    fingerprint = {"arch": arch.to_dict(), "config": config.to_dict(), "members": members,
                   "data": [list(x.shape), int(y.sum())]}
    ckpt = Path(checkpoint) if checkpoint else None
    from .safeload import load_or_set_aside  # a damaged checkpoint is set aside and training restarts

    state = load_or_set_aside(ckpt, "checkpoint", map_location=device,
                              required=("fingerprint", "params", "bufs", "diverged", "history", "epoch",
                                        "step", "gens")) if ckpt is not None else None
    if state is not None:
        if state["fingerprint"] == fingerprint:
            params = state["params"]
            bufs = state["bufs"]
            diverged = state["diverged"]
            history = state["history"]
            start_epoch, step = state["epoch"], state["step"]
            for g, s in zip(gens, state["gens"]):
                g.set_state(s)
    # weights row-major per member: the layout of the gradients that the forward's products give
    # (see nrc.models._linear), so parameter, gradient and momentum are updated in one fused pass
    params = {k: p.contiguous() for k, p in params.items()}
    bufs = {k: b.contiguous() for k, b in bufs.items()}
    for p in params.values():
        p.requires_grad_(True)
    names, plist = list(params), list(params.values())
    wds, lrs = [m["weight_decay"] for m in members], [m["lr"] for m in members]
    view_cache = {}  # per-member views of parameters and momentum buffers, built once
    xbuf = torch.empty((M, B, x.shape[-1]), device=device, dtype=x.dtype)  # minibatch buffers, reused
    ybuf = torch.empty((M, B), device=device, dtype=y.dtype)

    t0 = time.perf_counter()
    epochs = range(start_epoch, config.epochs)
    if _progress_enabled(progress) and config.epochs > start_epoch:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"training {M} members", initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        perms = torch.stack([torch.randperm(N, generator=g) for g in gens]).to(device)
        epoch_loss = torch.zeros(M, device=device)
        for b in range(steps):
            idx = perms[:, b * B:(b + 1) * B]
            xb, yb = _take(x, idx, per_member, xbuf), _take(y, idx, per_member, ybuf)
            losses = member_losses(forward(arch, params, xb), yb, config.loss).mean(1)
            grads = torch.autograd.grad(losses.sum(), plist)
            if config.schedule == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * step / total_steps))
            else:
                factor = 1.0
            with torch.no_grad():
                lr_now = [0.0 if d else lr_m * factor for d, lr_m in zip(diverged.tolist(), lrs)]
                _sgd_update(plist, list(grads), [bufs[k] for k in names], [decay[k] for k in names],
                            wds, lr_now, config.momentum, first=step == 0, cache=view_cache)
            epoch_loss += losses.detach()
            step += 1
        with torch.no_grad():
            finite = torch.isfinite(epoch_loss)
            for p in params.values():
                finite &= torch.isfinite(p.flatten(1)).all(1)
            newly = ~finite & ~diverged
            if newly.any():
                diverged |= newly
                for k, p in params.items():
                    p[newly] = float("nan")  # kept out of results, never silently reused
                    bufs[k][newly] = 0.0
        history["loss"].append((epoch_loss / max(steps, 1)).cpu().numpy())
        if ckpt is not None and ((epoch + 1) % config.checkpoint_every == 0) and epoch + 1 < config.epochs:
            _atomic_save({"fingerprint": fingerprint, "params": {k: p.detach().contiguous() for k, p in params.items()},
                          "bufs": {k: b.contiguous() for k, b in bufs.items()}, "diverged": diverged, "history": history, "epoch": epoch + 1,
                          "step": step, "gens": [g.get_state() for g in gens]}, ckpt)
        if callback is not None:
            callback(epoch, params, diverged.cpu().numpy())

    params = {k: p.detach().contiguous() for k, p in params.items()}
    if config.refine != "none" and config.refine_steps > 0:
        params, refine_loss, snapshots = _refine(arch, params, x, y, wd, diverged, config)
        history["refine_loss"] = refine_loss[None]
        # snapshots as history rows, so that a result cache keeping the history keeps them too
        for b, (snap, snap_loss) in snapshots.items():
            history[f"snapshot_{b}_params"] = torch.cat([snap[k].reshape(M, -1) for k in params], 1).T.cpu().numpy()
            history[f"snapshot_{b}_loss"] = snap_loss[None]
        diverged |= ~torch.isfinite(torch.as_tensor(refine_loss, device=device))
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    hist = {k: np.asarray(v, dtype=np.float64).reshape(-1, M) for k, v in history.items()}
    return Sweep(arch, config, members, {k: v.cpu() for k, v in params.items()}, hist,
                 diverged.cpu().numpy(), time.perf_counter() - t0, str(device))


def _dense(t: torch.Tensor):
    """``t`` or its transpose, whichever is contiguous (same elements, flat order); else None."""
    if t.is_contiguous():
        return t
    if t.ndim == 2 and t.t().is_contiguous():
        return t.t()
    return None


#: Members at least this large (parameters per member) are updated member by member with torch's
#: fused SGD kernel (one pass over memory; E1's 334k-parameter members); smaller ones with four
#: broadcast operations per tensor over the whole stack, since the per-member loop's Python and
#: dispatch cost (~9 kernel calls per member per step) outweighs the memory traffic there
#: (T1's 2.5k-parameter members: 1.1 s -> see benchmarks/profile_training.py).
FUSED_SGD_MIN_NUMEL = 65536


def _sgd_update(params, grads, bufs, decay, wds, lrs, momentum, first, cache=None):
    """One SGD step with momentum and coupled weight decay, in place, per member.

    As ``torch.optim.SGD``: ``g += wd p``; ``buf = g`` on the first step, else
    ``buf = momentum buf + g``; ``p -= lr buf``. Each member has its own ``wd`` and ``lr``, so the
    stacked tensors are updated member by member with torch's fused SGD kernel on views (one
    pass over memory instead of five element-wise operations); without that kernel, with
    broadcast in-place operations.
    """
    M = len(wds)
    per_member = sum(p[0].numel() for p in params)
    if hasattr(torch, "_fused_sgd_") and params[0].device.type == "cpu" and per_member >= FUSED_SGD_MIN_NUMEL:
        grads = [g if g.stride() == p.stride() else torch.empty_like(p).copy_(g) for p, g in zip(params, grads)]
        key = tuple(id(t) for t in params + bufs)
        if cache is not None and cache.get("key") == key:
            static = cache["views"]
        else:
            static = [[_dense(t[m]) for m in range(M)] for t in params + bufs]
            if cache is not None:
                cache.update(key=key, views=static)
        n = len(params)
        views = static[:n] + [[_dense(g[m]) for m in range(M)] for g in grads] + static[n:]
        if any(v is None for row in views for v in row):
            views = None
    else:
        views = None
    if views is not None:
        n = len(params)
        P, G, Bf = views[:n], views[n:2 * n], views[2 * n:]
        groups = [[i for i, d in enumerate(decay) if d], [i for i, d in enumerate(decay) if not d]]
        for m in range(M):
            for g_idx, idx in enumerate(groups):
                if idx:
                    torch._fused_sgd_([P[i][m] for i in idx], [G[i][m] for i in idx],
                                      [Bf[i][m] for i in idx] if momentum else [],  # the kernel wants no buffers at momentum 0
                                      weight_decay=wds[m] if g_idx == 0 else 0.0,
                                      momentum=momentum, lr=lrs[m], dampening=0.0, nesterov=False,
                                      maximize=False, is_first_step=first)
        return
    dev = params[0].device
    wd = torch.tensor(wds, device=dev, dtype=params[0].dtype)
    neg_lr = -torch.tensor(lrs, device=dev, dtype=params[0].dtype)
    for p, g, buf, d in zip(params, grads, bufs, decay):
        shape = (M,) + (1,) * (p.ndim - 1)
        if d:
            g.addcmul_(p, wd.view(shape))
        if first:
            buf.copy_(g)  # torch.optim.SGD starts the momentum buffer at the first gradient
        else:
            buf.mul_(momentum).add_(g)
        p.addcmul_(buf, neg_lr.view(shape))


def _refine(arch, params, x, y, wd, diverged, config):
    """Full-batch refinement of the regularised loss: gradient descent or L-BFGS, all members at once.

    Returns the refined parameters, the final regularised losses and ``{budget: (params, losses)}``
    for the budgets in ``config.refine_snapshots`` (L-BFGS only).
    """
    dtype = getattr(torch, config.refine_dtype)
    x = x.to(dtype)
    params = {k: v.to(dtype) for k, v in params.items()}
    wd = wd.to(dtype)
    M = wd.shape[0]
    if config.refine == "gd":
        for _ in range(config.refine_steps):
            ps = {k: v.requires_grad_(True) for k, v in params.items()}
            loss = regularized_loss(arch, ps, x, y, wd, config.loss, config.regularize_bias)
            grads = torch.autograd.grad(loss.sum(), list(ps.values()))
            with torch.no_grad():
                params = {k: torch.where(diverged.view((M,) + (1,) * (p.ndim - 1)), p, p - config.refine_lr * g)
                          for (k, p), g in zip(ps.items(), grads)}
        with torch.no_grad():
            final = regularized_loss(arch, params, x, y, wd, config.loss, config.regularize_bias)
        return params, final.cpu().numpy(), {}
    return _refine_lbfgs(arch, params, x, y, wd, diverged, config)


# ---------------------------------------------------------------------------------------------
# Batched L-BFGS: torch.optim.LBFGS (strong-Wolfe line search) run for every member at once.
#
# The refinement used to run torch's L-BFGS member after member; at the theory notebooks' sizes
# (a few thousand parameters, ~100 samples) an iteration is ~3.6 ms of Python and tiny kernels
# per member (measured, benchmarks/profile_training.py), so T1's 180 refined members took most of
# its 158 s. Here each member still follows torch's algorithm step for step -- its own
# iterate, history, line search, stopping rule -- but the work that touches vectors is batched:
#
# * the function/gradient evaluations of all members that need one are one stacked forward and
#   backward pass (each member's gradient is its own: the summed loss has no cross terms);
# * the two-loop recursion is written in its equivalent compact form, two triangular solves of
#   size history x history per member, over all members with one batched call (members wait for
#   each other at the direction step, which never changes what a member computes).
#
# Only the summation order of the dot products differs from torch's loop, so trajectories agree
# to rounding at first (tests/test_train.py compares with torch.optim.LBFGS member by member).
# ---------------------------------------------------------------------------------------------

def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch.optim.lbfgs._cubic_interpolate on Python floats (same IEEE double arithmetic)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe_steps(t, d, f, g, gtd, d_norm, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch.optim.lbfgs._strong_wolfe as a generator: yields a step ``t`` to evaluate and receives
    ``(f_new, g_new)`` at ``x + t d``; returns ``(f_new, g_new, t, evaluations)``."""
    f_new, g_new = yield t
    ls_func_evals = 1
    gtd_new = float(g_new.dot(d))
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = yield t
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _lbfgs_member(x, loss, flat_grad, *, max_iter, max_eval, tolerance_grad, tolerance_change, lr=1.0,
                  budgets=()):
    """One member of torch.optim.LBFGS.step(closure) with ``line_search_fn="strong_wolfe"``, as a
    generator.

    ``x`` is the member's row of the batched iterate (updated in place). Yields ``("eval", t, d)``
    (evaluate at ``x + t d``; receives ``(loss, grad)``) and ``("dir", grad, pair)`` (receives
    the direction ``d = -H grad`` from the batched history after adding ``pair = (s, y, ys, yy)``
    when not None).

    ``budgets`` (each below ``max_iter``): for each budget ``B``, the run with ``max_iter = B``
    (and torch's default ``max_eval = B * 5 // 4``) follows this run step for step until it stops,
    unless a line search needs more evaluations than that run's ``max_eval`` leaves it (its
    ``max_ls``). Yields ``("snap", B)`` when the iterate ``x`` is where the run with budget ``B``
    ends, and ``("fork", B)`` when that run would take a different line search here (it must then
    be run on its own); budgets left when this run stops end where it ends.
    """
    if float(flat_grad.abs().max()) <= tolerance_grad:
        return
    todo = sorted(budgets)
    current_evals, n_iter = 1, 0
    d = t = prev_flat_grad = prev_loss = None
    while n_iter < max_iter:
        n_iter += 1
        pair = None
        if n_iter > 1:
            y = flat_grad.sub(prev_flat_grad)
            s = d.mul(t)
            ys = float(y.dot(s))
            if ys > 1e-10:
                pair = (s, y, ys, float(y.dot(y)))
        d = yield ("dir", flat_grad, pair)
        prev_flat_grad = flat_grad
        prev_loss = loss
        t = min(1.0, 1.0 / float(flat_grad.abs().sum())) * lr if n_iter == 1 else lr
        gtd = float(flat_grad.dot(d))
        if gtd > -tolerance_change:
            break
        search = _strong_wolfe_steps(t, d, loss, flat_grad, gtd, float(d.abs().max()),
                                     max_ls=max_eval - current_evals)
        request = next(search)
        while True:
            try:
                request = search.send((yield ("eval", request, d)))
            except StopIteration as stop:
                loss, flat_grad, t, ls_func_evals = stop.value
                break
        x.add_(d, alpha=t)
        opt_cond = float(flat_grad.abs().max()) <= tolerance_grad
        for b in list(todo):
            b_max_eval = b * 5 // 4
            # the budget-b run gave this line search max_ls = b_max_eval - current_evals; it used
            # ls_func_evals - 1 beyond its first evaluation, so it took the same path iff that is below
            if current_evals + ls_func_evals > b_max_eval:
                todo.remove(b)
                yield ("fork", b)
            elif n_iter == b or current_evals + ls_func_evals >= b_max_eval:
                todo.remove(b)  # the budget-b run stops here (iterations or evaluations used up)
                yield ("snap", b)
        current_evals += ls_func_evals
        if n_iter == max_iter or current_evals >= max_eval or opt_cond:
            break
        if float(d.mul(t).abs().max()) <= tolerance_change:
            break
        if abs(loss - prev_loss) < tolerance_change:
            break


class _History:
    """The L-BFGS memories of M members: ring buffers of ``s`` and ``y`` plus their dot products.

    ``SY[m, a, b] = s_a . y_b`` for slots ``a``, ``b``, kept up to date one row and one column per
    new pair, so a direction costs four batched matrix-vector products and two triangular solves
    (the compact form of the two-loop recursion; mathematically the same numbers).
    """

    def __init__(self, M, P, H, dtype, device):
        self.H = H
        self.S = torch.zeros(M, H, P, dtype=dtype, device=device)
        self.Y = torch.zeros(M, H, P, dtype=dtype, device=device)
        self.SY = torch.zeros(M, H, H, dtype=dtype, device=device)
        self.ro = torch.zeros(M, H, dtype=dtype, device=device)
        self.gamma = torch.ones(M, dtype=dtype, device=device)
        self.head = torch.zeros(M, dtype=torch.long, device=device)
        self.eye = torch.eye(H, dtype=dtype, device=device)

    def add(self, rows, pairs):
        """Append ``pairs[i] = (s, y, ys, yy)`` to member ``rows[i]``'s memory (oldest dropped)."""
        if not rows:
            return
        dev, dt = self.S.device, self.S.dtype
        r = torch.tensor(rows, device=dev)
        slot = self.head[r]
        s = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
        ys = torch.tensor([p[2] for p in pairs], dtype=dt, device=dev)
        yy = torch.tensor([p[3] for p in pairs], dtype=dt, device=dev)
        self.S[r, slot] = s
        self.Y[r, slot] = y
        self.ro[r, slot] = 1.0 / ys
        self.gamma[r] = ys / yy
        # matrix-vector products member by member: torch.mv on a (H, P) view is ~7x faster than
        # the batched bmm of (M, H, P) by (M, P, 1) on the CPU (measured), and copies nothing
        self.SY[r, slot, :] = torch.stack([torch.mv(self.Y[m], v) for m, v in zip(rows, s)])  # s_new . y_b
        self.SY[r, :, slot] = torch.stack([torch.mv(self.S[m], v) for m, v in zip(rows, y)])  # s_a . y_new
        self.head[r] = (slot + 1) % self.H

    def direction(self, grads):
        """``-H_m g_m`` for every member (``grads``: (M, P)), as torch's two-loop recursion."""
        H = self.H
        # slots from oldest to newest per member (never-written slots hold zeros and ro = 0,
        # so they add nothing, as an absent memory)
        order = (self.head.unsqueeze(1) + torch.arange(H, device=grads.device)) % H  # (M, H)
        ro = self.ro.gather(1, order)
        SY = self.SY.gather(1, order.unsqueeze(2).expand(-1, -1, H)).gather(2, order.unsqueeze(1).expand(-1, H, -1))
        q = grads.neg()
        # first loop: al_i = ro_i s_i.(q - sum_{j>i} al_j y_j), newest first -> upper triangular
        Sq = torch.stack([torch.mv(S_m, q_m) for S_m, q_m in zip(self.S, q)]).gather(1, order)
        U = self.eye + ro.unsqueeze(2) * SY.triu(1)
        al = torch.linalg.solve_triangular(U, (ro * Sq).unsqueeze(-1), upper=True).squeeze(-1)
        al_slots = torch.zeros_like(al).scatter_(1, order, al)
        q = q - torch.bmm(al_slots.unsqueeze(1), self.Y).squeeze(1)
        r = q * self.gamma.unsqueeze(1)
        # second loop: be_i = ro_i y_i.(r + sum_{j<i} (al_j - be_j) s_j), oldest first -> lower
        Yr = torch.stack([torch.mv(Y_m, r_m) for Y_m, r_m in zip(self.Y, r)]).gather(1, order)
        Lo = self.eye + ro.unsqueeze(2) * SY.transpose(1, 2).tril(-1)
        c = torch.linalg.solve_triangular(Lo, (al - ro * Yr).unsqueeze(-1), upper=False).squeeze(-1)
        c_slots = torch.zeros_like(c).scatter_(1, order, c)
        return r + torch.bmm(c_slots.unsqueeze(1), self.S).squeeze(1)


def _refine_lbfgs(arch, params, x, y, wd, diverged, config, history_size=50):
    """torch.optim.LBFGS(lr=1, max_iter=refine_steps, tolerance_grad=1e-15, tolerance_change=1e-18,
    history_size=50, line_search_fn="strong_wolfe") on every member's regularised loss, batched
    over members (see the comment above :func:`_cubic_interpolate`).

    Returns the refined parameters, their regularised losses (NaN where diverged) and
    ``{budget: (parameters, losses)}`` for ``config.refine_snapshots``: for each budget what this
    function returns with ``refine_steps`` set to it (budget 0: the starting point), from this one
    run, plus separate runs only for members whose budget-``b`` run leaves this run's path
    (see ``_lbfgs_member``).
    """
    names = list(params)
    shapes = [tuple(params[k].shape[1:]) for k in names]
    sizes = [math.prod(s) for s in shapes]
    M = wd.shape[0]
    X = torch.cat([params[k].reshape(M, -1) for k in names], 1).contiguous()
    P = X.shape[1]
    live = [m for m in range(M) if not bool(diverged[m])]
    if not live:
        nan = np.full(M, np.nan)
        return params, nan, {b: (params, nan) for b in config.refine_snapshots}
    decay = _decay_mask(arch, config, names)
    decay_mask = None if all(decay.values()) else torch.cat(
        [torch.full((n,), float(decay[k]), dtype=X.dtype, device=X.device) for k, n in zip(names, sizes)])

    def evaluate(rows, points):
        """Losses (list of float) and gradients (k, P) of members ``rows`` at ``points``."""
        pts = points.detach().requires_grad_(True)
        ps, off = {}, 0
        for k, shp, n in zip(names, shapes, sizes):
            ps[k] = pts[:, off:off + n].view((len(rows),) + shp)
            off += n
        r = torch.as_tensor(rows, device=X.device)
        xr = x[r] if x.ndim == 3 else x
        yr = y[r] if y.ndim == 2 else y.unsqueeze(0).expand(len(rows), -1)
        with torch.enable_grad():
            # regularised loss as in regularized_loss, with the weight decay term taken on the flat
            # vector in one operation instead of one per tensor (fewer autograd nodes per call)
            sq = pts * pts if decay_mask is None else pts * pts * decay_mask
            loss = member_losses(forward(arch, ps, xr), yr, config.loss).mean(1) + 0.5 * wd[r] * sq.sum(1)
            grad, = torch.autograd.grad(loss.sum(), pts)
        return loss.detach().tolist(), grad

    max_iter = config.refine_steps
    max_eval = max_iter * 5 // 4
    budgets = [b for b in config.refine_snapshots if b > 0]
    snaps = {0: X.clone()} if 0 in config.refine_snapshots else {}  # budget 0: SGD alone
    snaps.update({b: X.clone() for b in budgets})  # rows overwritten when a member reaches b
    pending_snap = {m: set(budgets) for m in live}  # budgets whose rows still follow the iterate
    forks = {}  # budget -> members whose budget-b run leaves this run's path (run on their own)
    start = X.clone() if budgets else None
    losses, grads = evaluate(live, X[live])
    hist = _History(M, P, history_size, X.dtype, X.device)
    gens, pending = {}, {}

    def advance(m, answer):
        """Send ``answer`` to member m's generator; record snapshots and forks until it asks for work."""
        try:
            request = gens[m].send(answer)
            while request[0] in ("snap", "fork"):
                b = request[1]
                pending_snap[m].discard(b)
                if request[0] == "snap":
                    snaps[b][m] = X[m]
                else:
                    forks.setdefault(b, []).append(m)
                request = gens[m].send(None)
            pending[m] = request
        except StopIteration:
            pending.pop(m, None)
            for b in pending_snap[m]:  # the budget-b run stops where this one stops
                snaps[b][m] = X[m]

    for i, m in enumerate(live):
        gens[m] = _lbfgs_member(X[m], losses[i], grads[i], max_iter=max_iter, max_eval=max_eval,
                                tolerance_grad=1e-15, tolerance_change=1e-18, budgets=budgets)
        advance(m, None)
    while pending:
        waiting = [m for m, req in pending.items() if req[0] == "dir"]
        answers = {}
        if len(waiting) == len(pending):
            # every running member needs a direction: one batched solve
            adds = [(m, pending[m][2]) for m in waiting if pending[m][2] is not None]
            hist.add([m for m, _ in adds], [p for _, p in adds])
            G = torch.zeros_like(X)
            G[waiting] = torch.stack([pending[m][1] for m in waiting])
            D = hist.direction(G)
            answers = {m: D[m] for m in waiting}
        else:
            # the others are inside their line search: one batched evaluation
            rows = [m for m, req in pending.items() if req[0] == "eval"]
            r = torch.as_tensor(rows, device=X.device)
            t = torch.tensor([pending[m][1] for m in rows], dtype=X.dtype, device=X.device)
            dirs = torch.stack([pending[m][2] for m in rows])
            f, g = evaluate(rows, X[r] + t.unsqueeze(1) * dirs)
            answers = {m: (f[i], g[i]) for i, m in enumerate(rows)}
        for m, a in answers.items():
            advance(m, a)
    for b, rows in forks.items():
        # rare: a line search that the budget-b run would have cut short; run those members to b alone
        r = torch.as_tensor(rows)
        sub = _refine_lbfgs(arch, _unflatten(start[r], names, shapes, sizes), x[r] if x.ndim == 3 else x,
                            y[r] if y.ndim == 2 else y, wd[r], diverged[r],
                            replace(config, refine_steps=b, refine_snapshots=()), history_size)[0]
        snaps[b][r] = torch.cat([sub[k].reshape(len(rows), -1) for k in names], 1)
    out = _unflatten(X, names, shapes, sizes)

    def losses_at(ps):
        vals = np.full(M, np.nan)
        with torch.no_grad():
            r = torch.as_tensor(live)
            v = regularized_loss(arch, {k: p[r] for k, p in ps.items()}, x[r] if x.ndim == 3 else x,
                                 y[r] if y.ndim == 2 else y, wd[r], config.loss, config.regularize_bias)
        vals[live] = v.cpu().numpy()
        return vals

    snapshots = {b: _unflatten(v, names, shapes, sizes) for b, v in sorted(snaps.items())}
    return out, losses_at(out), {b: (ps, losses_at(ps)) for b, ps in snapshots.items()}


def _unflatten(X, names, shapes, sizes):
    """Stacked parameters from flat rows ``X`` (M, P), copied (no view of ``X``)."""
    out, off = {}, 0
    for k, shp, n in zip(names, shapes, sizes):
        out[k] = X[:, off:off + n].reshape((X.shape[0],) + shp).clone()
        off += n
    return out
