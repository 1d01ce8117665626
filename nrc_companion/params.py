"""One parameter model per notebook: names, types, defaults, allowed values and help, declared once.

Each class below is the parameter set of one notebook in ``notebooks/`` (:data:`MODELS` maps the
notebook's file stem to it). Its fields equal the notebook's ``parameters`` cell line by line
(name, default, the comment as description), which stays the text readers and ``papermill
--help-notebook`` see; ``tests/test_validation.py`` holds the two equal. The model adds what a
cell cannot say: allowed values (``Literal``), ranges, non-empty lists and the rules between
parameters (:func:`nrc_companion.config.rule`).

Three doors lead to the same check (:func:`nrc_companion.config.check`, one error format):

* a profile (``profiles/*.yaml``) and ``nrc reproduce --set``: :func:`nrc_companion.profiles.validate_profile`;
* ``papermill -p`` / ``-y`` and the cell's own defaults: :func:`validate_parameters`, called by
  every notebook right after its parameters cell::

      validate_parameters("t1_stationarity", globals())

  It coerces papermill's injected strings (``-p seeds 0``, ``-p weight_decays "[0.01, 0.1]"``),
  rejects names the notebook does not declare and writes the validated values back.
"""
from typing import Annotated, Any, Literal, Optional

from annotated_types import Ge, Gt, Lt, MinLen, Predicate
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from .config import (FINITE, Activation, Allowed, ConfigError, Count, Fraction, Momentum, NonEmpty, NonNegative,
                     Number, Positive, PositiveInt, check, field_defaults, rule)

__all__ = ["NotebookParameters", "MODELS", "validate_parameters", "model_for", "cell_model"]


class NotebookParameters(BaseModel):
    """Base of the notebooks' parameter models: unknown names are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# ----------------------------------------------------------------------------------------------
# shared types

Device = Literal["auto", "cpu", "cuda"]
Loss = Literal["mse", "ce"]
SyntheticOrImage = Literal["synthetic", "mnist", "fashion-mnist"]
Image = Literal["mnist", "fashion-mnist"]
Classes = Annotated[int, Ge(2)]
TestPerClass = Annotated[int, Ge(-1), Allowed("an integer >= 0, or -1 for the whole test split")]
AtLeastTwoHidden = Annotated[list[PositiveInt], MinLen(2)]


def _distinct(values) -> int:
    return len({float(v) for v in values})


def Lambdas(distinct: int = 1, *, one_positive: bool = False) -> Any:  # noqa: N802 - reads as a type
    """A grid of weight decays >= 0 with at least ``distinct`` different values (and one > 0)."""
    ok = (lambda w: _distinct(w) >= distinct and (not one_positive or max(w) > 0))
    text = (f"a list of at least {distinct} distinct finite numbers >= 0" if distinct > 1
            else "a non-empty list of finite numbers >= 0")
    if one_positive:
        text += ", at least one > 0 (the bound divides by lambda)"
    return Annotated[list[NonNegative], MinLen(1), Predicate(ok), Allowed(text)]


def Spreads(distinct: int, *, repeats: bool = True) -> Any:  # noqa: N802
    """At least ``distinct`` different positive within-class spreads (none twice unless ``repeats``)."""
    return Annotated[list[Positive], MinLen(distinct),
                     Predicate(lambda s: _distinct(s) >= distinct and (repeats or _distinct(s) == len(s))),
                     Allowed(f"a list of at least {distinct} distinct finite numbers > 0"
                             + ("" if repeats else ", none repeated"))]


def ImageWidths(*, residual: bool = False, min_hidden: int = 1, min_width: int = 1) -> Any:  # noqa: N802
    """Layer widths ``[784, hidden..., 10]`` of an MNIST-like network."""
    def ok(w):
        hidden = w[1:-1]
        return (w[0] == 784 and w[-1] == 10 and len(hidden) >= min_hidden and min(hidden) >= min_width
                and (not residual or len(set(hidden)) == 1))

    if residual:
        text = ("[784, h, h, ..., 10]: at least two equal hidden widths (one residual block per hidden width "
                "after the first)")
    elif min_hidden > 1:
        text = (f"[784, hidden..., 10] with at least {min_hidden} hidden widths, each >= {min_width} (a rank-10 "
                f"truncation of every matrix fed by hidden features)")
    else:
        text = "[784, hidden..., 10] with at least one hidden width >= 1"
    return Annotated[list[PositiveInt], MinLen(2 + max(min_hidden, 2 if residual else 1)), Predicate(ok),
                     Allowed(text)]


# ----------------------------------------------------------------------------------------------
# the notebooks, in the book's order


class DerivationTheoremA(NotebookParameters):
    """``derivation_theorem_a``: Theorem A's proof followed step by step on one trained network."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="K of the synthetic mixture (MNIST-like data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the synthetic mixture")
    per_class: PositiveInt = Field(30, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the synthetic mixture")
    data_seed: Count = Field(0, description="seed of the data (mixture draw, or the class-balanced subset)")
    hidden: NonEmpty(PositiveInt) = Field([32, 32, 32], description="hidden widths of the MLP (no biases)")
    activation: Activation = Field("tanh", description="activation of the hidden layers (smooth: L-BFGS reaches stationarity)")
    loss: Loss = Field("mse", description='"mse" or "ce"')
    weight_decay: Annotated[float, Gt(0), FINITE, Allowed("a finite number > 0 (the bound divides by lambda)")] = \
        Field(0.1, description="lambda")
    seed: Count = Field(0, description="initialisation seed")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD")
    layer: PositiveInt = Field(2, description="the layer l whose proof is followed step by step (1..L)")
    agree_tol: Positive = Field(1e-10, description="largest relative difference allowed between this derivation and nrc.site_quantities")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')

    @model_validator(mode="after")
    def _rules(self):
        rule(self.layer <= len(self.hidden) + 1, "layer", f"an integer in 1..{len(self.hidden) + 1} (1..len(hidden) + 1)")
        return self


class E1RankVsWeightDecay(NotebookParameters):
    """``e1_rank_vs_weight_decay``: rank against weight decay on MNIST and Fashion-MNIST."""

    datasets: Annotated[list[Image], MinLen(1), Predicate(lambda d: len(set(d)) == len(d)),
                        Allowed("a non-empty list of distinct items from 'mnist', 'fashion-mnist'")] = \
        Field(["mnist", "fashion-mnist"], description='data sets, each of "mnist" and "fashion-mnist"')
    per_class: PositiveInt = Field(100, description="training images per class (balanced subset)")
    test_per_class: TestPerClass = Field(100, description="test images per class (-1: the whole test split)")
    widths: ImageWidths() = Field([784, 128, 128, 128, 10], description="layer widths [d_0, hidden..., d_L]: 784 inputs, 10 classes")
    bias: bool = Field(False, description="layers with biases")
    loss: Loss = Field("ce", description='"ce" (cross-entropy) or "mse" (one-hot targets)')
    epochs: Count = Field(40, description="SGD epochs")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    weight_decays: Lambdas(3, one_positive=True) = Field([0.0, 0.0001, 0.001, 0.003, 0.01, 0.03], description="the grid of lambda (0 allowed)")
    seeds: NonEmpty(Count) = Field([0, 1], description="initialisation and minibatch-order seeds")
    refine_steps: Count = Field(0, description="full-batch L-BFGS iterations in float64 after SGD (0: none)")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E2ProportionalToTcv(NotebookParameters):
    """``e2_proportional_to_tcv``: rank against the total cluster variation of the inputs."""

    num_classes: NonEmpty(Classes) = Field([3, 5, 10], description="the numbers of classes K (one sweep each)")
    dim: PositiveInt = Field(20, description="input dimension d_0 (more than every K, so W_1 can have rank above K)")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spreads: Spreads(3, repeats=False) = Field([0.1, 0.2, 0.4, 0.8, 1.6], description="within-class standard deviations s of the mixture")
    center_scale: Positive = Field(2.0, description="standard deviation of each coordinate of the class centres")
    hidden: NonEmpty(PositiveInt) = Field([32, 32, 32], description="hidden widths of the MLP")
    loss: Loss = Field("mse", description='"mse" (one-hot targets) or "ce"')
    weight_decay: Positive = Field(0.01, description="the fixed lambda")
    seeds: NonEmpty(Count) = Field([0], description="seeds of the data (centres and noise), the initialisation and the minibatch order")
    epochs: Count = Field(20, description="SGD epochs before the refinement")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule, momentum 0.9)")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')

    @model_validator(mode="after")
    def _rules(self):
        rule(self.dim > max(self.num_classes), "dim",
             f"an integer > every K (here > {max(self.num_classes)}); otherwise W_1 has rank <= K for free")
        return self


class E3ResidualNetworks(NotebookParameters):
    """``e3_residual_networks``: rank against weight decay in residual networks."""

    dataset: Image = Field("mnist", description='"mnist" or "fashion-mnist"')
    per_class: PositiveInt = Field(100, description="training images per class (balanced subset)")
    test_per_class: TestPerClass = Field(100, description="test images per class (-1: the whole test split)")
    widths: ImageWidths(residual=True) = Field([784, 128, 128, 128, 10], description="[d_0, hidden..., d_L]: equal hidden widths, one block per hidden width after the first")
    bias: bool = Field(False, description="layers with biases")
    loss: Loss = Field("ce", description='"ce" (cross-entropy) or "mse" (one-hot targets)')
    epochs: Count = Field(40, description="SGD epochs")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.02, description="SGD learning rate (cosine schedule); 0.05 makes some residual members diverge at this size")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    weight_decays: Lambdas(3, one_positive=True) = Field([0.0, 0.0001, 0.001, 0.003, 0.01, 0.03], description="the grid of lambda (0 allowed)")
    seeds: NonEmpty(Count) = Field([0, 1], description="initialisation and minibatch-order seeds")
    refine_steps: Count = Field(0, description="full-batch L-BFGS iterations in float64 after SGD (0: none)")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E4NoLossBarrier(NotebookParameters):
    """``e4_no_loss_barrier``: paths without a loss barrier to collapsed networks."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="number of classes K (synthetic only)")
    dim: PositiveInt = Field(48, description="input dimension d_0 (synthetic only; keep it at least the number of samples)")
    per_class: PositiveInt = Field(10, description="training samples per class")
    spread: NonNegative = Field(1.0, description="within-class standard deviation (synthetic only)")
    center_scale: Positive = Field(1.0, description="standard deviation of the class-centre coordinates (synthetic only)")
    data_seed: Count = Field(0, description="seed of the synthetic data / of the image subset")
    hidden: NonEmpty(PositiveInt) = Field([64, 64], description="hidden widths of the ReLU network (no biases)")
    loss: Loss = Field("mse", description='"mse" (one-hot targets) or "ce"')
    weight_decays: NonEmpty(Positive) = Field([0.003, 0.01, 0.03], description="lambda of the loss measured along the paths (positive)")
    train_weight_decay: NonNegative = Field(0.0, description="weight decay used to train the interpolating starts")
    seeds: NonEmpty(Count) = Field([0, 1], description="seeds of the starting networks")
    epochs: Count = Field(200, description="SGD epochs for the starts")
    batch_size: PositiveInt = Field(10, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    descent_steps: PositiveInt = Field(200, description="L-BFGS iterations of the descent part")
    penalties: Annotated[list[Positive], MinLen(1), Predicate(lambda r: list(r) == sorted(r)),
                         Allowed("a non-empty increasing list of finite numbers > 0")] = \
        Field([0.01, 0.1, 1.0, 10.0, 100.0, 1000.0], description="increasing collapse penalties rho")
    collapse_steps: PositiveInt = Field(100, description="L-BFGS iterations per penalty")
    check_points: PositiveInt = Field(8, description="interior points of the monotone safeguard per segment")
    eval_points: Count = Field(7, description="interior points per segment where the loss is measured")
    line_points: Annotated[int, Ge(3)] = Field(101, description="points on each straight line")
    tolerance: Annotated[float, Ge(0), Lt(1), FINITE] = Field(1e-4, description="barrier and rise tolerance, relative to the loss at the start")
    dnc1_tol: Fraction = Field(1e-6, description="largest hidden within/total variance ratio that counts as DNC1")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E4bDnc1Optimality(NotebookParameters):
    """``e4b_dnc1_optimality``: deep neural collapse is optimal for the regularised loss."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="number of classes K (synthetic only; the image data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 (synthetic only)")
    per_class: PositiveInt = Field(30, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the inputs (synthetic only)")
    data_seed: Count = Field(0, description="seed of the synthetic data / of the image subset")
    hidden: Annotated[AtLeastTwoHidden, Allowed("a list of at least 2 integers >= 1 (some downstream chain has depth > 1)")] = \
        Field([32, 32, 32], description="hidden widths of the ReLU network (no biases)")
    loss: Loss = Field("mse", description='"mse" (one-hot targets) or "ce"')
    weight_decays: NonEmpty(NonNegative) = Field([0.003, 0.01, 0.03, 0.1], description="the grid of lambda (non-negative)")
    seeds: NonEmpty(Count) = Field([0, 1], description="initialisation and minibatch-order seeds")
    epochs: Count = Field(100, description="SGD epochs")
    batch_size: PositiveInt = Field(30, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD (0: none)")
    fact_instances: PositiveInt = Field(20, description="random instances of the elementary fact (part 1)")
    fact_classes: Classes = Field(4, description="number of classes of the random instances")
    fact_dim: PositiveInt = Field(48, description="input dimension of the random instances (at least fact_classes * fact_per_class)")
    fact_per_class: Annotated[int, Ge(2)] = Field(8, description="samples per class of the random instances")
    fact_targets: PositiveInt = Field(4, description="output dimension of the random class targets")
    spread_grid: Annotated[list[NonNegative], MinLen(2), Predicate(lambda s: 0 in s and 1 in s),
                           Allowed("a list of finite numbers >= 0 holding 0 and 1")] = \
        Field([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5], description="factors s of the residuals in part 3 (must hold 0 and 1)")
    rel_tol: Annotated[float, Ge(0), Lt(1e-3), FINITE] = Field(1e-9, description="relative rounding tolerance of the inequality checks")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')

    @model_validator(mode="after")
    def _rules(self):
        least = self.fact_classes * self.fact_per_class
        rule(self.fact_dim >= least, "fact_dim",
             f"an integer >= fact_classes * fact_per_class = {least} (exact interpolation)")
        return self


class E5SingularValueForecast(NotebookParameters):
    """``e5_singular_value_forecast``: singular values forecast by a reduced problem."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="number of classes K (synthetic only)")
    dim: PositiveInt = Field(10, description="input dimension d_0 (synthetic only)")
    per_class: PositiveInt = Field(30, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation (synthetic only)")
    data_seed: Count = Field(0, description="seed of the synthetic data / of the image subset")
    hidden: NonEmpty(PositiveInt) = Field([32, 32, 32], description="hidden widths of the ReLU network")
    bias: bool = Field(False, description="layers with biases (regularised)")
    loss: Loss = Field("mse", description='"mse" (one-hot targets) or "ce"')
    weight_decays: NonEmpty(Positive) = Field([0.01, 0.03, 0.1], description="the grid of lambda (positive)")
    seeds: NonEmpty(Count) = Field([0, 1], description="training seeds")
    epochs: Count = Field(100, description="SGD epochs")
    batch_size: PositiveInt = Field(30, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    refine_steps: Count = Field(1000, description="full-batch L-BFGS iterations in float64 after SGD")
    forecast_restarts: PositiveInt = Field(8, description="random initialisations of the reduced problem")
    forecast_steps: PositiveInt = Field(2000, description="L-BFGS iterations per restart of the reduced problem")
    forecast_seed: Count = Field(1000, description="first initialisation seed of the reduced problem")
    rank_tol: Fraction = Field(0.01, description="tau of rank_tau: singular values above tau * s_1 count as non-zero")
    value_tol: Positive = Field(0.1, description="largest relative error of a non-zero singular value that counts as forecast")
    minima_rtol: Positive = Field(0.0001, description="relative gap of the reduced objective that separates two minima")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E6LowRankCompression(NotebookParameters):
    """``e6_low_rank_compression``: accuracy after truncating hidden-fed weights to rank K."""

    dataset: Image = Field("mnist", description='"mnist" or "fashion-mnist"')
    per_class: PositiveInt = Field(100, description="training images per class (balanced subset)")
    test_per_class: Annotated[int, Ge(-1), Predicate(lambda n: n != 0),
                              Allowed("an integer >= 1, or -1 for the whole test split (test accuracy is measured)")] = \
        Field(100, description="test images per class (-1: the whole test split)")
    widths: ImageWidths(min_hidden=2, min_width=10) = Field([784, 128, 128, 128, 10], description="layer widths [d_0, hidden..., d_L]: 784 inputs, 10 classes")
    bias: bool = Field(False, description="layers with biases")
    loss: Loss = Field("ce", description='"ce" (cross-entropy) or "mse" (one-hot targets)')
    epochs: Count = Field(40, description="SGD epochs")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    weight_decays: Lambdas(2) = Field([0.0, 0.0001, 0.001, 0.003, 0.01, 0.03], description="the grid of lambda (0 allowed)")
    seeds: NonEmpty(Count) = Field([0, 1], description="initialisation and minibatch-order seeds")
    refine_steps: Count = Field(0, description="full-batch L-BFGS iterations in float64 after SGD (0: none)")
    tau: Fraction = Field(0.01, description="relative threshold of the rank_tau truncation")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E7AnyModel(NotebookParameters):
    """``e7_any_model``: Theorem A's bound on models built with torch.nn."""

    dataset: Image = Field("mnist", description='"mnist" or "fashion-mnist"')
    per_class: PositiveInt = Field(100, description="training images per class (balanced subset)")
    test_per_class: TestPerClass = Field(100, description="test images per class (-1: the whole test split)")
    hidden: NonEmpty(PositiveInt) = Field([128, 128], description="hidden widths of both MLPs")
    bias: bool = Field(True, description="Linear layers with biases")
    loss: Loss = Field("ce", description='"ce" (cross-entropy) or "mse" (one-hot targets)')
    weight_decay: Positive = Field(0.01, description="coupled L2 weight decay lambda of both models (> 0)")
    epochs: PositiveInt = Field(30, description="SGD epochs of both models")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    seed: Count = Field(0, description="seed of the initialisation and minibatch order")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class E8TheoremABites(NotebookParameters):
    """``e8_theorem_a_bites``: where Theorem A's bound bites (the terminal phase on MNIST)."""

    dataset: Image = Field("mnist", description='"mnist" or "fashion-mnist"')
    per_class: PositiveInt = Field(50, description="training images per class (a small balanced subset, so training reaches the terminal phase)")
    data_seed: Count = Field(0, description="seed of the balanced subset")
    hidden: AtLeastTwoHidden = Field([64, 64, 64], description="hidden widths of the bias-free ReLU MLP (at least two: W_2.. are fed by hidden features)")
    loss: Loss = Field("mse", description='"mse" (one-hot targets) or "ce"')
    weight_decays: NonEmpty(Positive) = Field([0.001, 0.003, 0.01, 0.03], description="the grid of lambda (all > 0: the bound divides by lambda)")
    seeds: NonEmpty(Count) = Field([0, 1, 2], description="initialisation and minibatch-order seeds")
    checkpoints: list[Count] = Field([0, 10, 30], description="shorter SGD budgets (epochs; 0: the initialisation), each a separate cached run")
    epochs: PositiveInt = Field(100, description="SGD epochs of the end point")
    batch_size: PositiveInt = Field(50, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate (cosine schedule)")
    momentum: Momentum = Field(0.9, description="SGD heavy-ball momentum")
    refine_steps: Count = Field(200, description="full-batch float64 L-BFGS iterations after the SGD epochs (the refined end point)")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')

    @model_validator(mode="after")
    def _rules(self):
        rule(all(c < self.epochs for c in self.checkpoints), "checkpoints",
             f"a list of SGD budgets in [0, epochs) = [0, {self.epochs})")
        return self


class T1Stationarity(NotebookParameters):
    """``t1_stationarity``: how close training gets to a stationary point."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="K of the synthetic mixture (MNIST-like data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the synthetic mixture")
    per_class: PositiveInt = Field(30, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the synthetic mixture")
    data_seed: Count = Field(0, description="seed of the data (mixture draw, or the class-balanced subset)")
    hidden: NonEmpty(PositiveInt) = Field([32, 32, 32], description="hidden widths of the MLP")
    activations: NonEmpty(Activation) = Field(["relu", "tanh"], description="activations to compare (ReLU has kinks; tanh is smooth)")
    bias: bool = Field(False, description="whether the layers have (regularised) biases")
    losses: NonEmpty(Loss) = Field(["mse", "ce"], description='losses to train with: "mse" and/or "ce"')
    weight_decays: NonEmpty(Positive) = Field([0.01, 0.03, 0.1], description="the grid of lambda (all > 0)")
    seeds: NonEmpty(Count) = Field([0], description="initialisation seeds")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(32, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: NonEmpty(Count) = Field([0, 30, 100, 300, 1000, 3000], description='L-BFGS iteration budgets after SGD (0: SGD only); the largest is "refined"')
    kink_tol: NonNegative = Field(1e-6, description="a pre-activation with |a| at most kink_tol * max|a| counts as sitting on the kink at 0")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


def _theorem_fields(spread: float) -> dict:
    """The parameters T2, T3 and T4 share (and so their cache keys), with their defaults."""
    return dict(
        dataset=(SyntheticOrImage, Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')),
        num_classes=(Classes, Field(4, description="K of the synthetic mixture (MNIST-like data sets have 10)")),
        dim=(PositiveInt, Field(10, description="input dimension d_0 of the synthetic mixture")),
        per_class=(PositiveInt, Field(30, description="training samples per class")),
        spread=(NonNegative, Field(spread, description="within-class standard deviation of the synthetic mixture"
                                   + (" (overlapping classes)" if spread > 1 else ""))),
        data_seed=(Count, Field(0, description="seed of the data (mixture draw, or the class-balanced subset)")),
        hidden=(NonEmpty(PositiveInt), Field([32, 32, 32], description="hidden widths of the MLP")),
        activation=(Activation, Field("relu", description="activation of the hidden layers")),
        bias=(bool, Field(False, description="whether the layers have (regularised) biases")),
        losses=(NonEmpty(Loss), Field(["mse", "ce"], description='losses to train with: "mse" and/or "ce"')),
        weight_decays=(NonEmpty(Positive), Field([0.003, 0.01, 0.03, 0.1], description="the grid of lambda (all > 0: the bound divides by lambda)")),
        seeds=(NonEmpty(Count), Field([0, 1], description="initialisation seeds")),
        epochs=(Count, Field(100, description="SGD epochs (momentum 0.9, cosine schedule)")),
        batch_size=(PositiveInt, Field(32, description="SGD minibatch size")),
        lr=(Positive, Field(0.05, description="SGD learning rate")),
        refine_steps=(Count, Field(300, description="full-batch L-BFGS iterations in float64 after SGD (0: SGD only)")),
    )


_DEVICE_FIELD = (Device, Field("auto", description='"auto", "cpu" or "cuda"'))
T2RankTcvBound = create_model("T2RankTcvBound", __base__=NotebookParameters,
                              __doc__="``t2_rank_tcv_bound``: Theorem A's rank-TCV bound on a sweep.",
                              **_theorem_fields(0.7), device=_DEVICE_FIELD)
T3LemmaA2Constant = create_model("T3LemmaA2Constant", __base__=NotebookParameters,
                                 __doc__="``t3_lemma_a2_constant``: the constant of Lemma A2.",
                                 **_theorem_fields(0.7), device=_DEVICE_FIELD)
T4AnyPartition = create_model("T4AnyPartition", __base__=NotebookParameters,
                              __doc__="``t4_any_partition``: the bound for any partition of the samples.",
                              **_theorem_fields(1.5),
                              partition_seed=(Count, Field(0, description="seed of the k-means and the random "
                                                                          "partitions")),
                              device=_DEVICE_FIELD)


class T5CorollaryA1LowRank(NotebookParameters):
    """``t5_corollary_a1_low_rank``: Corollary A1, low rank from collapse."""

    num_classes: Classes = Field(4, description="K, number of classes of the synthetic Gaussian mixture")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the mixture")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spread: Annotated[float, Gt(0), FINITE, Allowed("a finite number > 0 (part (c) compares it with spread 0)")] = \
        Field(0.7, description="within-class standard deviation (parts a, b, and the spread > 0 side of c)")
    data_seed: Count = Field(0, description="seed of the synthetic data (centres and noise)")
    hidden: NonEmpty(PositiveInt) = Field([16, 16, 16], description="hidden widths of the MLP")
    activation: Activation = Field("tanh", description="activation of the hidden layers (smooth: L-BFGS reaches stationarity)")
    weight_decays: NonEmpty(Positive) = Field([0.01, 0.03, 0.1], description="the grid of lambda (all > 0)")
    seeds: NonEmpty(Count) = Field([0], description="initialisation seeds")
    loss_b: Loss = Field("mse", description='loss of parts (b) and (c): "mse" or "ce"')
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(20, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class T6TcvPropagation(NotebookParameters):
    """``t6_tcv_propagation``: Lemma A3, how TCV propagates through a layer."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="K of the synthetic mixture (image data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the synthetic mixture (image data sets: 784)")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the synthetic mixture")
    data_seed: Count = Field(0, description="seed of the data (synthetic draw, or the image subset)")
    hidden: NonEmpty(PositiveInt) = Field([16, 16, 16], description="hidden widths of the MLP")
    activations: NonEmpty(Activation) = Field(["relu", "tanh", "leaky_relu"], description="activations to test (one network each)")
    bias: bool = Field(False, description="whether the layers have biases (Lemma A3 holds either way)")
    loss: Loss = Field("mse", description='training loss: "mse" or "ce"')
    weight_decays: NonEmpty(NonNegative) = Field([0.003, 0.03], description="the grid of lambda")
    seeds: NonEmpty(Count) = Field([0], description="initialisation seeds")
    early_epochs: PositiveInt = Field(3, description="SGD epochs of the non-stationary snapshot")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) of the near-stationary run")
    batch_size: PositiveInt = Field(20, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(300, description="full-batch L-BFGS iterations in float64 after SGD (near-stationary run)")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')

    @model_validator(mode="after")
    def _rules(self):
        rule(self.early_epochs <= self.epochs, "early_epochs", f"an integer in 1..epochs = 1..{self.epochs}")
        return self


class T7BalancedNorms(NotebookParameters):
    """``t7_balanced_norms``: balanced layer norms at stationary points."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="K of the synthetic mixture (image data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the synthetic mixture (image data sets: 784)")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the synthetic mixture")
    data_seed: Count = Field(0, description="seed of the data (synthetic draw, or the image subset)")
    hidden: NonEmpty(PositiveInt) = Field([16, 16, 16], description="hidden widths of the ReLU MLP (no biases)")
    loss: Loss = Field("mse", description='training loss: "mse" or "ce"')
    weight_decays: NonEmpty(Positive) = Field([0.02, 0.05, 0.1], description="the grid of lambda (all > 0)")
    seeds: NonEmpty(Count) = Field([0], description="initialisation seeds")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(20, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD")
    gd_steps: PositiveInt = Field(300, description="steps of the full-batch gradient-descent run (claim 9)")
    gd_lr: Positive = Field(0.05, description="step size of that run (small enough to be a descent method)")
    sgd_epochs: PositiveInt = Field(100, description="epochs of the contrasting SGD run (momentum 0.9, constant learning rate lr)")
    descent_tol: NonNegative = Field(1e-6, description="largest relative increase of L_lambda per GD step still counted as descent (float32 rounding)")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class T8RankVsWeightDecay(NotebookParameters):
    """``t8_rank_vs_weight_decay``: rank falls as weight decay grows."""

    dataset: SyntheticOrImage = Field("synthetic", description='"synthetic" (Gaussian mixture), "mnist" or "fashion-mnist"')
    num_classes: Classes = Field(4, description="K of the synthetic mixture (image data sets have 10)")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the synthetic mixture (image data sets: 784)")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spread: NonNegative = Field(0.7, description="within-class standard deviation of the synthetic mixture")
    data_seed: Count = Field(0, description="seed of the data (synthetic draw, or the image subset)")
    hidden: NonEmpty(PositiveInt) = Field([16, 16, 16], description="hidden widths of the MLP")
    activation: Activation = Field("relu", description="activation of the hidden layers")
    bias: bool = Field(False, description="whether the layers have (regularised) biases")
    losses: NonEmpty(Loss) = Field(["mse"], description='training losses to sweep: "mse" and/or "ce"')
    weight_decays: Lambdas(2) = Field([0.001, 0.003, 0.01, 0.03, 0.1], description="the grid of lambda (non-negative, at least two distinct values)")
    seeds: NonEmpty(Count) = Field([0, 1], description="initialisation seeds")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(20, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD (0: SGD only)")
    rank_tol: Annotated[float, FINITE, Predicate(lambda t: t in (1e-2, 1e-3)),
                        Allowed("0.01 or 0.001 (the tolerances nrc's tables report)")] = \
        Field(1e-3, description="relative tolerance tau of the numerical rank: 1e-2 or 1e-3")
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


class T9RankVsTcv(NotebookParameters):
    """``t9_rank_vs_tcv``: rank against the TCV of the previous layer."""

    num_classes: Classes = Field(4, description="K, number of classes of the synthetic mixture")
    dim: PositiveInt = Field(10, description="input dimension d_0 of the mixture")
    per_class: PositiveInt = Field(20, description="training samples per class")
    spreads: Spreads(3) = Field([0.2, 0.3, 0.45, 0.7, 1.0, 1.5], description="within-class standard deviations s, one data set each")
    center_scale: Positive = Field(2.0, description="standard deviation of the class-centre coordinates")
    data_seed: Count = Field(0, description="seed of the data (same centres and noise directions at every spread)")
    hidden: NonEmpty(PositiveInt) = Field([16, 16, 16], description="hidden widths of the MLP")
    activation: Activation = Field("relu", description="activation of the hidden layers")
    bias: bool = Field(False, description="whether the layers have (regularised) biases")
    loss: Loss = Field("mse", description='training loss: "mse" or "ce"')
    weight_decay: Positive = Field(0.01, description="the fixed lambda")
    seeds: NonEmpty(Count) = Field([0], description="initialisation seeds (each spread is trained with every seed)")
    epochs: Count = Field(100, description="SGD epochs (momentum 0.9, cosine schedule) before the refinement")
    batch_size: PositiveInt = Field(20, description="SGD minibatch size")
    lr: Positive = Field(0.05, description="SGD learning rate")
    refine_steps: Count = Field(500, description="full-batch L-BFGS iterations in float64 after SGD")
    tcv_column: Literal["tcv1", "tcv2", "tcv_ratio"] = Field("tcv1", description='TCV of the previous layer: "tcv1" (TCV_1/N), "tcv2" (TCV_2/N) or "tcv_ratio"')
    device: Device = Field("auto", description='"auto", "cpu" or "cuda"')


#: Notebook file stem -> its parameter model.
MODELS: dict[str, type[NotebookParameters]] = {
    "derivation_theorem_a": DerivationTheoremA,
    "e1_rank_vs_weight_decay": E1RankVsWeightDecay,
    "e2_proportional_to_tcv": E2ProportionalToTcv,
    "e3_residual_networks": E3ResidualNetworks,
    "e4_no_loss_barrier": E4NoLossBarrier,
    "e4b_dnc1_optimality": E4bDnc1Optimality,
    "e5_singular_value_forecast": E5SingularValueForecast,
    "e6_low_rank_compression": E6LowRankCompression,
    "e7_any_model": E7AnyModel,
    "e8_theorem_a_bites": E8TheoremABites,
    "t1_stationarity": T1Stationarity,
    "t2_rank_tcv_bound": T2RankTcvBound,
    "t3_lemma_a2_constant": T3LemmaA2Constant,
    "t4_any_partition": T4AnyPartition,
    "t5_corollary_a1_low_rank": T5CorollaryA1LowRank,
    "t6_tcv_propagation": T6TcvPropagation,
    "t7_balanced_norms": T7BalancedNorms,
    "t8_rank_vs_weight_decay": T8RankVsWeightDecay,
    "t9_rank_vs_tcv": T9RankVsTcv,
}


# ----------------------------------------------------------------------------------------------
# a notebook the companion declares no model for (a new one, a test's): the types of its cell


def cell_annotation(type_name: str, default) -> Any:
    """The annotation a parameters-cell type (``"int"``, ``"list"``, ``"float | None"``) stands for.

    A ``list`` takes the item type all items of its default share (floats where ints and floats
    mix); other or unknown annotations take any value.
    """
    t = type_name.replace(" ", "").removeprefix("typing.")
    opening = "Optional["
    if t.startswith(opening) and t.endswith("]"):
        inner = cell_annotation(t[len(opening):-1], default)
        return Optional[inner]
    parts = [p for p in t.split("|") if p]
    if "None" in parts and len(parts) == 2:
        return Optional[cell_annotation(next(p for p in parts if p != "None"), default)]
    base = t.split("[", 1)[0].lower()
    if base in ("list", "tuple"):
        kinds = {type(v) for v in default} if isinstance(default, (list, tuple)) and default else set()
        item = (Number if kinds <= {int, float} and float in kinds else
                int if kinds == {int} else str if kinds == {str} else bool if kinds == {bool} else Any)
        return list[item]
    return {"int": int, "float": Number, "bool": bool, "str": str, "dict": dict}.get(base, Any)


def cell_model(name: str, declared: dict[str, tuple[str, Any, str]]) -> type[NotebookParameters]:
    """A model from a parameters cell's ``{name: (type, default, help)}``: its types, no more."""
    return create_model(name, __base__=NotebookParameters,
                        **{k: (cell_annotation(t, d), Field(d, description=h)) for k, (t, d, h) in declared.items()})


def model_for(notebook: str, parameters: dict) -> type[NotebookParameters]:
    """The model of ``notebook`` (a file stem): its :data:`MODELS` entry, else one from its cell.

    ``parameters`` is :func:`nrc_companion.profiles.notebook_parameters` of the notebook.
    """
    if notebook in MODELS:
        return MODELS[notebook]
    return cell_model(notebook, {p.name: (p.type, p.default, p.help) for p in parameters.values()})


# ----------------------------------------------------------------------------------------------
# the notebook's side


def _yaml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _injected(namespace: dict) -> list[str]:
    """Names papermill injected: its ``# Parameters`` cell runs right before this call's cell."""
    import ast

    history = namespace.get("In")
    if not isinstance(history, (list, tuple)) or len(history) < 2:
        return []
    cell = str(history[-2])
    if not cell.lstrip().startswith("# Parameters"):
        return []
    try:
        tree = ast.parse(cell)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def validate_parameters(model, namespace: dict) -> NotebookParameters:
    """Validate a notebook's parameters in ``namespace`` (its ``globals()``) and write them back typed.

    Call it in the first code cell after the ``parameters`` cell::

        validate_parameters("t1_stationarity", globals())

    papermill injects ``-p`` / ``-y`` values and a profile's values as plain assignments in a cell
    right after the parameters cell, without checking them (``-p seeds 0`` arrives as the int 0,
    ``-p weight_decays "[0.01, 0.1]"`` as a string). This coerces and validates every parameter
    against the notebook's model (:func:`nrc_companion.config.check`), fails on a name papermill
    injected that the model does not declare (papermill itself only warns), and replaces the
    values in ``namespace`` by the validated ones.

    Parameters
    ----------
    model : str or NotebookParameters subclass
        A notebook stem of ``MODELS``, or a model.
    namespace : dict
        The notebook's globals.

    Returns
    -------
    NotebookParameters
        The validated parameters.

    Raises
    ------
    nrc_companion.config.ConfigError
        One line naming the parameter, the value and what is allowed, with the papermill option
        that passes a value of the right type.
    """
    if isinstance(model, str):
        if model not in MODELS:
            raise ConfigError(f"no parameter model for notebook {model!r}; declared: {', '.join(MODELS)}")
        model = MODELS[model]
    fields = list(model.model_fields)
    values = {k: namespace[k] for k in fields if k in namespace}
    values.update({k: namespace.get(k) for k in _injected(namespace) if k not in model.model_fields})
    defaults = field_defaults(model)
    params = check(model, values,
                   hint=lambda k: f'pass it with papermill as -y "{k}: {_yaml_text(defaults[k])}"')
    namespace.update({k: getattr(params, k) for k in fields})
    return params
