"""An independent float64 reference for every number nrc reports (used by the unit tests only).

Written on purpose differently from ``nrc``: plain NumPy, explicit loops over samples and classes,
a hand-written backward pass (no autograd), singular values known in closed form from the way the
weights are built, NC1 through the ``d x d`` pseudo-inverse, distances to rank ``K`` from the
eigenvalues of ``M M^T``. Nothing here imports from ``nrc`` except to build objects.
"""
from __future__ import annotations

import math

import numpy as np

LIPSCHITZ = {"relu": 1.0, "tanh": 1.0, "linear": 1.0}


def act(name, a):
    if name == "relu":
        return np.where(a > 0, a, 0.0)
    if name == "tanh":
        return np.tanh(a)
    if name == "linear":
        return a.copy()
    raise ValueError(name)


def dact(name, a):
    if name == "relu":
        return (a > 0).astype(np.float64)
    if name == "tanh":
        return 1.0 - np.tanh(a) ** 2
    if name == "linear":
        return np.ones_like(a)
    raise ValueError(name)


def matrix_with_singular_values(rng, d_out, d_in, s):
    """``U diag(s) V^T`` with random orthonormal ``U``, ``V``: its singular values are exactly ``s``."""
    r = min(d_out, d_in)
    assert len(s) == r
    U, _ = np.linalg.qr(rng.standard_normal((d_out, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d_in, r)))
    return (U * np.asarray(s, dtype=np.float64)) @ V.T


def rank_from_s(s, tol):
    return sum(1 for v in s if v > tol * s[0])


def energy_rank_from_s(s, eps):
    total = sum(v * v for v in s)
    for r in range(len(s) + 1):
        if sum(v * v for v in s[r:]) <= eps * eps * total:
            return r
    return len(s)


def dist_from_s(s, k):
    return math.sqrt(sum(v * v for v in s[k:]))


def dist_to_rank_eig(M, k):
    """``d_k^F(M) = ||M - P_k M||_F`` with ``P_k`` the projector on the top-k eigenvectors of ``M M^T``.

    An eigendecomposition, not an SVD; the residual is formed explicitly so a tiny distance is
    accurate to rounding of ``||M||`` (not to its square root).
    """
    M = np.asarray(M, dtype=np.float64)
    if M.shape[0] > M.shape[1]:
        M = M.T
    _, vecs = np.linalg.eigh(M @ M.T)  # ascending
    top = vecs[:, vecs.shape[1] - min(k, vecs.shape[1]):]
    return math.sqrt(float(((M - top @ (top.T @ M)) ** 2).sum()))


def residuals(U, labels, K):
    """Within-class residuals by a loop over classes."""
    R = np.zeros_like(U)
    for k in range(K):
        idx = np.flatnonzero(labels == k)
        if len(idx):
            R[idx] = U[idx] - U[idx].mean(axis=0)
    return R


def collapse_stats(U, labels, K):
    """tcv1, tcv2 (both / N), tcv_ratio, nc1 by loops over samples and the d x d pseudo-inverse."""
    N, d = U.shape
    R = residuals(U, labels, K)
    tcv1 = sum(math.sqrt(float(R[i] @ R[i])) for i in range(N)) / N
    tcv2 = sum(float(R[i] @ R[i]) for i in range(N)) / N
    mu = U.mean(axis=0)
    total = sum(float((U[i] - mu) @ (U[i] - mu)) for i in range(N))
    Sw = np.zeros((d, d))
    for i in range(N):
        Sw += np.outer(R[i], R[i])
    Sw /= N
    Sb = np.zeros((d, d))
    for k in range(K):
        m = U[labels == k].mean(axis=0) - mu
        Sb += np.outer(m, m)
    Sb /= K
    nc1 = float(np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10, hermitian=True))) / K
    return {"tcv1": tcv1, "tcv2": tcv2, "tcv_ratio": tcv2 * N / total, "nc1": nc1}


def site_names(widths, residual):
    L = len(widths) - 1
    if not residual:
        return [f"W{l}" for l in range(1, L + 1)]
    names = ["W1"]
    for l in range(2, L):
        names += [f"W{l}", f"V{l}"]
    return names + [f"W{L}"]


def bias_name(w):
    return ("b" if w[0] == "W" else "c") + w[1:]


def per_sample_loss(logits, y, loss):
    """Per-sample losses and their gradients w.r.t. the logits, one sample at a time."""
    N, K = logits.shape
    ell = np.zeros(N)
    grad = np.zeros_like(logits)
    for i in range(N):
        a = logits[i]
        e = np.zeros(K)
        e[y[i]] = 1.0
        if loss == "ce":
            m = a.max()
            lse = m + math.log(sum(math.exp(v - m) for v in a))
            ell[i] = lse - a[y[i]]
            grad[i] = np.exp(a - lse) - e
        else:
            ell[i] = 0.5 * float((a - e) @ (a - e))
            grad[i] = a - e
    return ell, grad


def network(widths, activation, residual, p, x, y, loss):
    """Forward and hand-written backward pass of one member (``p``: name -> float64 array).

    Returns ``(logits, per-sample losses, sites)``: ``sites[name] = (input U, pre-activation A,
    Delta = d sum_i loss_i / dA)``.
    """
    L = len(widths) - 1

    def lin(name, u):
        out = u @ p[name].T
        b = p.get(bias_name(name))
        return out + b if b is not None else out

    store = {}
    if not residual:
        z = x
        for l in range(1, L):
            a = lin(f"W{l}", z)
            store[f"W{l}"] = (z, a)
            z = act(activation, a)
        out = lin(f"W{L}", z)
        store[f"W{L}"] = (z, out)
        ell, g = per_sample_loss(out, y, loss)
        deltas = {f"W{L}": g}
        for l in range(L - 1, 0, -1):
            deltas[f"W{l}"] = (deltas[f"W{l + 1}"] @ p[f"W{l + 1}"]) * dact(activation, store[f"W{l}"][1])
    else:
        a1 = lin("W1", x)
        store["W1"] = (x, a1)
        z = act(activation, a1)
        for l in range(2, L):
            aw = lin(f"W{l}", z)
            h = act(activation, aw)
            av = lin(f"V{l}", h)
            store[f"W{l}"], store[f"V{l}"] = (z, aw), (h, av)
            z = z + av
        out = lin(f"W{L}", z)
        store[f"W{L}"] = (z, out)
        ell, g = per_sample_loss(out, y, loss)
        deltas = {f"W{L}": g}
        gz = g @ p[f"W{L}"]
        for l in range(L - 1, 1, -1):
            deltas[f"V{l}"] = gz
            gh = gz @ p[f"V{l}"]
            deltas[f"W{l}"] = gh * dact(activation, store[f"W{l}"][1])
            gz = gz + deltas[f"W{l}"] @ p[f"W{l}"]
        deltas["W1"] = gz * dact(activation, a1)
    sites = {n: (store[n][0], store[n][1], deltas[n]) for n in site_names(widths, residual)}
    return out, ell, sites


def reference_tables(widths, activation, residual, members, x, y, loss, K, known_s,
                     x_test=None, y_test=None, regularize_bias=True):
    """Reference per-site rows and per-member rows.

    ``members``: list of (params dict of float64 arrays, weight_decay);
    ``known_s[m][name]``: the closed-form singular values of that weight.
    """
    lip = LIPSCHITZ[activation]
    names = site_names(widths, residual)
    site_rows, member_rows = [], []
    N = x.shape[0]
    for m, (p, lam) in enumerate(members):
        out, ell, sites = network(widths, activation, residual, p, x, y, loss)
        L0 = float(ell.sum()) / N
        reg = sum(0.5 * float((v * v).sum()) for k, v in p.items() if k[0] in "WV" or regularize_bias)
        acc = sum(int(np.argmax(out[i]) == y[i]) for i in range(N)) / N
        row = {"train_loss": L0, "reg_loss": L0 + lam * reg, "train_acc": acc, "test_acc": float("nan")}
        if x_test is not None and len(x_test):
            ot, _, _ = network(widths, activation, residual, p, x_test, y_test, loss)
            row["test_acc"] = sum(int(np.argmax(ot[i]) == y_test[i]) for i in range(len(y_test))) / len(y_test)
        member_rows.append(row)
        for j, name in enumerate(names):
            U, A, D = sites[name]
            s = list(known_s[m][name])
            W = p[name]
            G = D.T @ U / N + lam * W
            g = math.sqrt(float((G * G).sum()))
            frob = math.sqrt(sum(v * v for v in s))
            R = residuals(U, y, K)
            cross = math.sqrt(float(((D.T @ R) ** 2).sum()))
            dnorm = math.sqrt(float((D * D).sum()))
            dmax = max(math.sqrt(float(D[i] @ D[i])) for i in range(N))
            st = collapse_stats(U, y, K)
            if residual:
                rho = float("nan")
            else:
                rho = 1.0
                for later in names[j + 1:]:
                    rho *= lip * known_s[m][later][0]
            bias_term = math.sqrt(float(D.sum(axis=0) @ D.sum(axis=0))) * math.sqrt(float(U.mean(0) @ U.mean(0)))
            dK = dist_from_s(s, K)
            tcv2_out = float("nan")
            if j < len(names) - 1 and not residual:
                tcv2_out = collapse_stats(act(activation, A), y, K)["tcv2"]
            site_rows.append({
                "member": m, "site": name, "layer": j + 1,
                "frob": frob, "spec": s[0],
                "rank_1e-2": rank_from_s(s, 1e-2), "rank_1e-3": rank_from_s(s, 1e-3),
                "energy_rank": energy_rank_from_s(s, 1e-2),
                "dK": dK, "dK_rel": dK / frob, "dKm1": dist_from_s(s, K - 1),
                "sK1_ratio": s[K] / s[0] if len(s) > K else 0.0,
                "grad_norm": g, "stationarity": g / (lam * frob),
                "delta_norm": dnorm, "delta_max": dmax, "cross_norm": cross,
                "bound": g / lam + cross / (lam * N),
                "bound_cs": g / lam + dnorm * math.sqrt(st["tcv2"] * N) / (lam * N),
                "bound_tcv1": g / lam + dmax * st["tcv1"] / lam,
                "bound_a2": g / lam + rho * math.sqrt(2 * L0) * math.sqrt(st["tcv2"]) / lam,
                "bound_km1": g / lam + cross / (lam * N) + bias_term / (lam * N),
                "rho": rho,
                "identity_gap": 0.0,
                "dK_grad_form": dist_to_rank_eig(D.T @ U / N, K) / lam,
                "tcv1": st["tcv1"], "tcv2": st["tcv2"], "tcv_ratio": st["tcv_ratio"], "nc1": st["nc1"],
                "tcv2_out": tcv2_out,
                "a3_bound": lip ** 2 * s[0] ** 2 * st["tcv2"],
            })
    return site_rows, member_rows


def kmeans_one_restart_at_a_time(Z, K, seed=0, iters=100, n_init=4):
    """k-means as nrc did before issue 20: k-means++ seeding and Lloyd iterations of one restart at
    a time, lowest cost wins (the batched nrc.kmeans must give the same assignment)."""
    import torch

    Z = torch.as_tensor(Z, dtype=torch.float64)
    N = Z.shape[0]
    gen = torch.Generator().manual_seed(seed)
    zz = (Z * Z).sum(1, keepdim=True)

    def sq_dist(C):
        return (zz - 2.0 * (Z @ C.T) + (C * C).sum(1)).clamp_min(0.0)

    best, best_cost = None, float("inf")
    for _ in range(n_init):
        first = int(torch.randint(N, (1,), generator=gen))
        centers = [Z[first]]
        for _ in range(1, K):
            d2 = sq_dist(torch.stack(centers)).amin(1)
            prob = (d2 / d2.sum()) if d2.sum() > 0 else torch.full((N,), 1.0 / N)
            centers.append(Z[int(torch.multinomial(prob, 1, generator=gen))])
        C = torch.stack(centers)
        for _ in range(iters):
            assign = sq_dist(C).argmin(1)
            onehot = torch.nn.functional.one_hot(assign, K).to(Z.dtype)
            counts = onehot.sum(0)
            newC = torch.where(counts[:, None] > 0, (onehot.T @ Z) / counts.clamp_min(1.0)[:, None], C)
            if torch.equal(newC, C):
                break
            C = newC
        for k in range(K):  # fill empty clusters as nrc.collapse._fill_empty
            cnt = torch.bincount(assign, minlength=K)
            if cnt[k] > 0:
                continue
            movable = cnt[assign] > 1
            d2 = ((Z - C[assign]) ** 2).sum(1)
            assign = assign.clone()
            assign[int(torch.where(movable, d2, torch.full_like(d2, -1.0)).argmax())] = k
        cost = float(((Z - C[assign]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = assign, cost
    return best


def nc2_reference(U, labels, K):
    """NC2 of Papyan, Han & Donoho (2020) in plain NumPy, loops over classes and pairs.

    equinorm = std/mean of ||mu_k - mu_G||; equiangle = std of the pairwise cosines of the centred
    means; max_angle = mean over pairs of |cos + 1/(K-1)|. (Population std, as torch's
    ``unbiased=False``; the test states which.)
    """
    U = np.asarray(U, dtype=np.float64)
    labels = np.asarray(labels)
    mu = np.stack([U[labels == k].mean(0) for k in range(K)])
    C = mu - U.mean(0)
    norms = np.linalg.norm(C, axis=1)
    cos = [C[i] @ C[j] / (norms[i] * norms[j]) for i in range(K) for j in range(K) if i != j]
    return {"equinorm": norms.std() / norms.mean(), "cos": np.array(cos), "norms": norms,
            "max_angle": float(np.mean([abs(c + 1 / (K - 1)) for c in cos]))}


def monotone_lbfgs_one_point_at_a_time(params, objective, steps, check_points=4, history_size=50, max_stalls=3):
    """The waypoints of nrc.landscape's monotone L-BFGS descent as it was before issue 20: each check
    point of a step evaluated by its own ``objective`` call (nrc now evaluates them stacked, which
    must give the same path bitwise)."""
    import torch

    ps = {k: v.detach().clone().to(torch.float64).requires_grad_(True) for k, v in params.items()}

    def make():
        return torch.optim.LBFGS(list(ps.values()), lr=1.0, max_iter=1, max_eval=25, history_size=history_size,
                                 tolerance_grad=1e-14, tolerance_change=1e-18, line_search_fn="strong_wolfe")

    def value_at(p):
        with torch.no_grad():
            return float(objective(p))

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
        moved = not all(torch.equal(a[k], b[k]) for k in a)
        cut = None
        if moved:
            prev = value_at(a)
            for i, t in enumerate(ts):
                v = value_at({k: (1 - t) * a[k] + t * b[k] for k in a})
                if not v <= prev:
                    cut = 0.0 if i == 0 else float(ts[i - 1])
                    break
                prev = v
        if not moved or cut == 0.0:
            stalls += 1
            with torch.no_grad():
                for k, p in ps.items():
                    p.copy_(a[k])
            if stalls >= max_stalls:
                break
            opt = make()
            continue
        stalls = 0
        if cut is not None:
            with torch.no_grad():
                for k, p in ps.items():
                    p.copy_((1 - cut) * a[k] + cut * b[k])
            opt = make()
        out.append({k: v.detach().clone() for k, v in ps.items()})
    return out
