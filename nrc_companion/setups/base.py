"""Every notebook's set-up: its validated parameters turned into device, store, data, network, members, configs.

:func:`prepare` is the first code cell of every notebook. The helpers below it build the pieces the
same way everywhere, so identical parameter values give identical
:meth:`nrc.ResultStore.member_key` cache keys and notebooks share trained members. In particular,
a theory check run with ``dataset="mnist"``, ``hidden=[128, 128, 128]``, ``activation="relu"``,
``bias=False``, ``per_class``, ``epochs``, ``batch_size``, ``lr``, ``refine_steps`` and
``data_seed=0`` equal to E1's parameters (E1's ``momentum`` is 0.9) reuses E1's trained members
for every ``(weight_decay, seed)`` they have in common.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from time import perf_counter

from nrc.data import Dataset, load_dataset, make_gaussian_mixture
from nrc.models import Architecture
from nrc.train import TrainConfig, grid


@dataclass
class Setup:
    """What every notebook builds first from its validated parameters (:func:`prepare`).

    ``data``, ``arch``, ``members`` and ``config`` are ``None`` where the notebook's parameters do
    not determine one alone (several data sets, several activations, several losses, a list of
    refinement budgets): the notebook builds those itself from the same helpers.
    """

    name: str
    params: object
    device: str
    store: object
    data: Dataset | None = None
    arch: Architecture | None = None
    members: list[dict] | None = None
    config: TrainConfig | None = None

    # the device of nrc.analyze (derivation, T1-T9)
    @property
    def analysis_device(self) -> str | None:
        """The device for :func:`nrc.analyze`: the one the parameters name, ``None`` (the CPU) for ``"auto"``.

        Training resolves ``"auto"`` to the GPU where there is one (``device``), while the
        notebooks have always measured a sweep on the CPU unless a device is named; this keeps it so.
        """
        return None if dict(self.params).get("device", "auto") == "auto" else self.device

    # the run time so far (T5-T7)
    started: float = field(default_factory=perf_counter)  #: when :func:`prepare` built it (``time.perf_counter``)

    def elapsed(self) -> float:
        """Wall-clock seconds since :func:`prepare` built this set-up (the notebook's run time so far)."""
        return perf_counter() - self.started


def device_for(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` where torch sees a GPU, else ``"cpu"``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def data_for(params, **overrides) -> Dataset:
    """The training data a notebook's parameters describe (``overrides`` replace single fields).

    ``dataset`` (default ``"synthetic"``) picks the Gaussian mixture of :func:`nrc.make_gaussian_mixture`
    (``num_classes``, ``dim``, ``per_class``, ``spread``, ``center_scale``, ``data_seed``) or a
    balanced image subset of :func:`nrc.load_dataset` (``per_class``, ``data_seed``,
    ``test_per_class``: -1 is the whole test split, absent is none). Missing fields take the
    defaults of those loaders, so a notebook and :func:`load_data` with the same values give the
    same tensors (and cache keys).
    """
    p = {**dict(params), **overrides}
    name = p.get("dataset", "synthetic")
    if name in ("synthetic", "gmm"):
        return make_gaussian_mixture(num_classes=int(p.get("num_classes", 4)), dim=int(p.get("dim", 10)),
                                     per_class=int(p.get("per_class", 30)), spread=float(p.get("spread", 0.7)),
                                     center_scale=float(p.get("center_scale", 2.0)), seed=int(p.get("data_seed", 0)))
    test = int(p.get("test_per_class", 0))
    return load_dataset(name, per_class=int(p["per_class"]), test_per_class=None if test < 0 else test,
                        seed=int(p.get("data_seed", 0)), download=True)


def prepare(name: str, namespace: dict, *, residual: bool = False) -> Setup:
    """The first code cell of every notebook: validate the parameters, style the page, build the set-up.

    Parameters
    ----------
    name : str
        The notebook's file stem; its parameter model is ``params.MODELS[name]``.
    namespace : dict
        The notebook's ``globals()``: validated and written back typed (``validate_parameters``
        of ``nrc_companion.params``).
    residual : bool, optional
        Build the ``widths`` network as a residual MLP (:class:`nrc.Architecture` ``residual=True``;
        E3). The parameter models have no such field: the notebook says it.

    Returns
    -------
    Setup
        The validated parameters, the device (``"auto"`` resolved), a :class:`nrc.ResultStore`, and
        what the parameters alone determine: the data (a ``dataset`` or a synthetic mixture with
        one ``spread``), the MLP ``(d_0, *hidden, K)`` or ``widths`` (one ``activation``, default
        ReLU; ``bias`` default off), the ``weight_decays x seeds`` members (``train_weight_decay x seeds``
        where the notebook trains at one lambda), and the SGD + L-BFGS
        configuration of ``train_config`` (one ``loss``, one ``refine_steps``).
    """
    from nrc.cache import ResultStore

    from ..params import validate_parameters
    from ..report import page_setup

    params = validate_parameters(name, namespace)
    page_setup()
    p = dict(params)
    setup = Setup(name=name, params=params, device=device_for(p.get("device", "auto")), store=ResultStore())
    single = "datasets" not in p and "spreads" not in p and isinstance(p.get("num_classes", 0), int)
    if single and ("dataset" in p or "spread" in p):
        setup.data = data_for(params)
    activation = p.get("activation", None if "activations" in p else "relu")
    if activation is not None:
        if "widths" in p:
            setup.arch = Architecture(tuple(int(w) for w in p["widths"]), activation=activation,
                                      bias=bool(p.get("bias", False)), residual=bool(residual))
        elif "hidden" in p and setup.data is not None:
            setup.arch = architecture(setup.data, p["hidden"], activation=activation, bias=p.get("bias", False))
    if "train_weight_decay" in p and "seeds" in p:  # E4: trained at one lambda, measured at weight_decays
        setup.members = members([p["train_weight_decay"]], p["seeds"])
    elif "weight_decays" in p and "seeds" in p:
        setup.members = members(p["weight_decays"], p["seeds"])
    if "loss" in p and isinstance(p.get("refine_steps", 0), int) and {"epochs", "batch_size", "lr"} <= p.keys():
        setup.config = train_config(p["loss"], epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                                    refine_steps=p.get("refine_steps", 0), momentum=p.get("momentum", 0.9))
    return setup


def load_data(dataset: str = "synthetic", *, num_classes: int = 4, dim: int = 10, per_class: int = 30,
              spread: float = 0.7, data_seed: int = 0, test_per_class: int | None = 0) -> Dataset:
    """The training data of a notebook: the Gaussian mixture, or a balanced image subset (:func:`data_for`, by keyword).

    Parameters
    ----------
    dataset : str
        ``"synthetic"`` (or ``"gmm"``) for :func:`nrc.make_gaussian_mixture`; otherwise a name
        accepted by :func:`nrc.load_dataset` (``"mnist"``, ``"fashion-mnist"``, ...), loaded
        flattened and standardised, downloaded when missing.
    num_classes, dim, spread : int, int, float
        Classes, input dimension and within-class standard deviation of the mixture (ignored for
        image data).
    per_class : int
        Training samples per class.
    data_seed : int
        Seed of the mixture draw or of the balanced subset.
    test_per_class : int or None
        Test samples per class of an image data set (``None``: the whole test split). The
        training tensors, and so the cache keys, do not depend on it.

    Returns
    -------
    Dataset
    """
    return data_for({"dataset": dataset, "num_classes": num_classes, "dim": dim, "per_class": per_class,
                     "spread": spread, "data_seed": data_seed,
                     "test_per_class": -1 if test_per_class is None else test_per_class})


def architecture(data: Dataset, hidden: Sequence[int], *, activation: str = "relu",
                 bias: bool = False) -> Architecture:
    """The MLP ``(d_0, *hidden, K)`` for ``data``: input width and class count taken from the data."""
    return Architecture((int(data.dim), *[int(h) for h in hidden], int(data.num_classes)),
                        activation=activation, bias=bool(bias))


def members(weight_decays: Iterable[float], seeds: Iterable[int]) -> list[dict]:
    """The ``weight_decay x seed`` grid, weight decays sorted ascending (floats), seeds as ints."""
    return grid(weight_decay=sorted(float(w) for w in weight_decays), seed=[int(s) for s in seeds])


def train_config(loss: str, *, epochs: int, batch_size: int, lr: float, refine_steps: int = 0,
                 momentum: float = 0.9, regularize_bias: bool = True) -> TrainConfig:
    """SGD with momentum and a cosine schedule, then ``refine_steps`` full-batch L-BFGS steps in float64.

    ``refine_steps = 0`` means SGD only. This is the configuration of E1, of T1-T5, T8, T9 and the
    derivation, and of T7's near-stationary run; ``regularize_bias=False`` leaves biases out of the
    weight decay (T5).
    """
    steps = max(int(refine_steps), 0)
    return TrainConfig(loss=loss, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                       momentum=float(momentum), schedule="cosine", refine="lbfgs" if steps > 0 else "none",
                       refine_steps=steps, refine_dtype="float64", regularize_bias=bool(regularize_bias))


def budgets_config(loss: str, budgets: Iterable[int], *, epochs: int, batch_size: int, lr: float,
                   momentum: float = 0.9) -> TrainConfig:
    """The one training of :func:`train_budgets`: SGD, then L-BFGS to the largest budget, kept at the others."""
    budgets = sorted({int(b) for b in budgets})
    config = train_config(loss, epochs=epochs, batch_size=batch_size, lr=lr, refine_steps=budgets[-1],
                          momentum=momentum)
    return replace(config, refine_snapshots=tuple(budgets[:-1])) if len(budgets) > 1 else config


def train_budgets(store, arch: Architecture, data: Dataset, members: list[dict], loss: str, budgets: Iterable[int], *,
                  epochs: int, batch_size: int, lr: float, momentum: float = 0.9, device=None) -> dict:
    """SGD, then one L-BFGS refinement to the largest of ``budgets``, kept at every budget (T1, E8).

    Returns ``{budget: Sweep}``, each equal to ``store.train`` with
    ``train_config(loss, ..., refine_steps=budget)`` (budget 0: SGD alone), from one cached
    training instead of one per budget (``TrainConfig.refine_snapshots``, ``Sweep.refined_at``).
    """
    config = budgets_config(loss, budgets, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum)
    sweep = store.train(arch, data, members, config, device=device)
    return {b: sweep.refined_at(b) for b in sorted({int(b) for b in budgets})}


def relative_difference(a, b) -> float:
    """``||a - b|| / max(||a||, ||b||)`` of two numbers or tensors, in float64 (0 when both are 0).

    The derivation notebook compares each identity of Theorem A's proof with it.
    """
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(a.norm()), float(b.norm()), 1e-300)
    return float((a - b).norm()) / scale


def scale_text(data: Dataset, widths: Sequence[int], *, members: int, epochs: int, seeds: Iterable,
               device, seconds: float | None = None, extra: str = "") -> str:
    """One sentence stating the scale of a run (for ``nrc_companion.record`` / glue).

    Parameters
    ----------
    data : Dataset
    widths : sequence of int
        Layer widths of the network(s).
    members : int
        Trained members in total.
    epochs : int
        SGD epochs per member.
    seeds : iterable
        The seeds used.
    device : str or None
        The device that trained (``None``: automatic).
    seconds : float, optional
        Training wall time in seconds (cached members count the time they took when trained).
    extra : str
        Appended as is.
    """
    seeds = list(seeds)
    text = (f"{data.name}, N = {data.n_train} training samples, K = {data.num_classes} classes; "
            f"widths {tuple(int(w) for w in widths)}; {members} members, {epochs} SGD epochs, "
            f"{len(seeds)} seed(s); device {device or 'auto'}")
    if seconds is not None:
        text += f"; training wall time {seconds:.1f} s"
    return text + (f"; {extra}" if extra else "") + "."
