"""One way to check what ``nrc`` reads: constrained types, one coercion rule, one error format.

* The vocabulary (:data:`Count`, :data:`Positive`, :func:`NonEmpty`, ``Literal[...]``, ...) is plain
  ``typing.Annotated`` with :mod:`annotated_types` constraints, which pydantic enforces. The same
  annotation gives :func:`describe`'s "what is allowed" text, so a help line and an error message
  cannot disagree.
* :func:`check` coerces values the way people type them (:func:`coerce`: ``"10"`` -> 10,
  ``"1e-3,1e-2"`` -> ``[0.001, 0.01]``, ``0`` -> ``[0]`` where a list is expected, a boolean is
  never a number) and validates them against a model with pydantic. Every problem becomes a
  :class:`ConfigError` whose message is one line: ``LABEL = VALUE is not allowed: expected ALLOWED``.
* :class:`SweepOptions` is the model of ``nrc sweep``: its fields are the command's options, with
  their defaults, help texts and allowed values; :func:`nrc_companion.cli.add_sweep_arguments`
  builds the argparse options from it. It is a standard-library dataclass (validated by pydantic's
  ``TypeAdapter``) because ``nrc sweep --help`` must not wait for pydantic's import (about four
  times Python's own start-up, measured here); pydantic is imported when values are checked.
* The notebooks' parameter models are in :mod:`nrc_companion.params`.
* :func:`check_writable` and :func:`check_device` probe what a value cannot tell: an output folder,
  a CUDA device.

The command line prints a :class:`ConfigError` and exits with code 2.
"""
import ast
import dataclasses
import math
import os
import re
import types
import typing
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from annotated_types import Ge, Gt, Le, Lt, MinLen, Predicate

__all__ = ["ConfigError", "RuleError", "rule", "Allowed", "describe", "coerce", "check", "check_all", "field_types", "field_defaults",
           "SweepOptions", "SWEEP_GROUPS", "sweep_options", "load_config_file", "check_writable", "check_device",
           "unwrap_annotated"]


class ConfigError(ValueError):
    """Invalid configuration; ``str(err)`` is one line naming the key, the value and what is allowed."""


class RuleError(Exception):
    """Raised by a model's cross-parameter rule: ``name`` broke it, ``allowed`` says what it must be.

    Not a ValueError on purpose: pydantic wraps ValueErrors of validators (losing the parameter's
    name) but lets other exceptions through to :func:`check`.
    """

    def __init__(self, name: str, allowed: str):
        super().__init__(f"{name}: {allowed}")
        self.name, self.allowed = name, allowed


def rule(ok: bool, name: str, allowed: str) -> None:
    """Raise :class:`RuleError` unless ``ok``: a check across parameters, naming the one it blames."""
    if not ok:
        raise RuleError(name, allowed)


@dataclasses.dataclass(frozen=True)
class Allowed:
    """Annotation metadata: the text :func:`describe` gives for a constraint it cannot word itself."""

    text: str


# ----------------------------------------------------------------------------------------------
# the vocabulary

#: A number must be finite wherever a float is expected (nan and inf are never a setting).
FINITE = Predicate(math.isfinite)
Count = Annotated[int, Ge(0)]
PositiveInt = Annotated[int, Ge(1)]
Number = Annotated[float, FINITE]
NonNegative = Annotated[float, Ge(0), FINITE]
Positive = Annotated[float, Gt(0), FINITE]
Fraction = Annotated[float, Gt(0), Lt(1), FINITE]


Momentum = Annotated[float, Ge(0), Lt(1), FINITE]
#: The activations of :data:`nrc.models.ACTIVATIONS`, spelled out so that reading them imports no
#: torch (a test keeps the two equal).
Activation = Literal["relu", "leaky_relu", "tanh", "gelu", "softplus", "linear"]


def NonEmpty(item) -> Any:  # noqa: N802 - reads as a type
    """A list of ``item`` with at least one element."""
    return Annotated[list[item], MinLen(1)]


def _is_device(v) -> bool:
    return isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None


# ----------------------------------------------------------------------------------------------
# annotations -> coercion and text


def unwrap_annotated(tp) -> tuple[Any, list]:
    """``Annotated[T, m1, m2]`` -> (T, [m1, m2]); nested Annotated are flattened."""
    metas: list = []
    while typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tp, metas = args[0], list(args[1:]) + metas
    return tp, metas


def _optional(tp):
    """``X | None`` / ``Optional[X]`` -> X, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _parse_text(text: str):
    """A string typed by a user: a Python/YAML literal if it is one, else the string itself."""
    s = text.strip()
    if not s:
        return s
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if s[0] in "[{":
        import yaml

        try:
            return yaml.safe_load(s)
        except yaml.YAMLError:
            return s
    return s


def _listify(value):
    """A list from a list/tuple, a scalar (``0`` -> ``[0]``), or text (``"1e-3,1e-2"``, ``"[1, 2]"``)."""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith(("[", "(")):
            parsed = _parse_text(s)
            return list(parsed) if isinstance(parsed, (list, tuple)) else value
        if "," in s:
            return [_parse_text(v) for v in s.split(",") if v.strip()]
        return [_parse_text(s)] if s else []
    if isinstance(value, (list, tuple)):
        return list(value)
    return value if value is None else [value]


def coerce(tp, value):
    """``value`` as typed by a person, brought to the shape of annotation ``tp`` (validation is pydantic's).

    Lists accept a list, a tuple, a scalar or text (``"[0.01, 0.1]"``, ``"0.01,0.1"``); numbers
    accept numeric text (``"1e-3"``); a boolean is never a number (it is turned into text, which
    the number type then rejects); ``None``/``null`` text is ``None`` where ``None`` is allowed.
    Everything else goes to pydantic as given (its lax mode reads ``"no"`` as False, 5.0 as 5).
    """
    base, _ = unwrap_annotated(tp)
    inner = _optional(base)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return coerce(inner, value)
    if typing.get_origin(base) in (list, tuple):
        items = _listify(value)
        args = typing.get_args(base)
        return [coerce(args[0], v) for v in items] if isinstance(items, list) and args else items
    if base in (int, float):
        if isinstance(value, bool):
            return repr(value)
        if isinstance(value, str):
            parsed = _parse_text(value)
            if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
                return parsed
    return value


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else repr(x) if isinstance(x, str) else str(x)


def _bounds(metas) -> str:
    lo = next(((m.ge, "[") for m in metas if isinstance(m, Ge)), None) or \
        next(((m.gt, "(") for m in metas if isinstance(m, Gt)), None)
    hi = next(((m.lt, ")") for m in metas if isinstance(m, Lt)), None) or \
        next(((m.le, "]") for m in metas if isinstance(m, Le)), None)
    if lo and hi:
        return f" in {lo[1]}{_fmt(lo[0])}, {_fmt(hi[0])}{hi[1]}"
    if lo:
        return f" {'>=' if lo[1] == '[' else '>'} {_fmt(lo[0])}"
    if hi:
        return f" {'<' if hi[1] == ')' else '<='} {_fmt(hi[0])}"
    return ""


def _alternatives(values) -> str:
    words = [_fmt(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


_NOUNS = {"number": "numbers", "integer": "integers", "string": "strings", "boolean": "booleans",
          "mapping": "mappings", "value": "values"}


def _plural(text: str) -> str:
    for article in ("a ", "an "):
        if text.startswith(article):
            head, _, rest = text[len(article):].partition(" ")
            if head == "finite":
                noun, _, rest = rest.partition(" ")
                return " ".join(["finite", _NOUNS.get(noun, noun), rest]).strip()
            return " ".join([_NOUNS.get(head, head), rest]).strip()
    return "items each " + text


def describe(tp) -> str:
    """What annotation ``tp`` allows, in words (``"a non-empty list of finite numbers > 0"``)."""
    base, metas = unwrap_annotated(tp)
    own = next((m.text for m in metas if isinstance(m, Allowed)), None)
    if own is not None:
        return own
    inner = _optional(base)
    if inner is not None:
        return describe(inner) + " or null"
    origin = typing.get_origin(base)
    if origin is Literal:
        return _alternatives(typing.get_args(base))
    if origin in (list, tuple):
        args = typing.get_args(base)
        least = max([m.min_length for m in metas if isinstance(m, MinLen)] or [0])
        head = "a non-empty list of " if least == 1 else f"a list of at least {least} " if least else "a list of "
        if not args or args[0] is Any:
            return head + "values"
        item_base, _ = unwrap_annotated(args[0])
        if typing.get_origin(item_base) is Literal:
            return head + "items from " + ", ".join(_fmt(v) for v in typing.get_args(item_base))
        return head + _plural(describe(args[0]))
    finite = any(isinstance(m, Predicate) and m.func is math.isfinite for m in metas)
    if base is bool:
        return "a boolean (true or false)"
    if base is int:
        return "an integer" + _bounds(metas)
    if base is float:
        return ("a finite number" if finite else "a number") + _bounds(metas)
    if base is str:
        return "a string"
    if base is dict:
        return "a mapping"
    return "any value"


def field_types(model) -> dict[str, Any]:
    """``{field: annotation with its constraints}`` of a pydantic model or a dataclass, in order."""
    hints = typing.get_type_hints(model, include_extras=True)
    names = list(model.model_fields) if hasattr(model, "model_fields") else [f.name for f in dataclasses.fields(model)]
    return {n: hints[n] for n in names}


def field_defaults(model) -> dict[str, Any]:
    """``{field: default}`` of a pydantic model or a dataclass."""
    if hasattr(model, "model_fields"):
        return {n: f.get_default(call_default_factory=True) for n, f in model.model_fields.items()}
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(model)}


def _display(value) -> str:
    text = str(value) if isinstance(value, float) and not math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_all(model, values: dict, label=lambda name: f"parameter {name!r}", hint=None,
              where: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """Like :func:`check`, but every problem: ``(instance or None, [(name, one-line message), ...])``.

    Unknown names and every field's first error are reported together; the model's cross-parameter
    rules (:func:`rule`) run only once every field is valid.
    """
    from pydantic import TypeAdapter, ValidationError

    tps = field_types(model)
    defaults = field_defaults(model)
    tail = (lambda name: f"; {hint(name)}") if hint is not None else (lambda name: "")

    def message(name, allowed, item=""):
        given = values.get(name, defaults.get(name))
        return (name, f"{where}{label(name)} = {_display(given)}{item} is not allowed: expected {allowed}{tail(name)}")

    problems = []
    for k in values:
        if k not in tps:
            import difflib

            close = difflib.get_close_matches(str(k), list(tps), n=1)
            problems.append((k, f"{where}unknown {label(k)}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; allowed: {', '.join(tps)}"))
    prepared = {k: coerce(tps[k], v) for k, v in values.items() if k in tps}
    try:
        instance = (model.model_validate(prepared) if hasattr(model, "model_validate")
                    else TypeAdapter(model).validate_python(prepared))
    except RuleError as err:
        return None, problems + [message(err.name, err.allowed)]
    except ValidationError as err:
        seen = set()
        for e in err.errors():
            loc = e.get("loc") or ("?",)
            name = str(loc[0])
            if name in seen or name not in tps:
                continue
            seen.add(name)
            item = f" (item {loc[1]}: {_display(e.get('input'))})" if len(loc) > 1 and isinstance(loc[1], int) else ""
            problems.append(message(name, describe(tps[name]), item))
        return None, problems
    return (None if problems else instance), problems


def check(model, values: dict, label=lambda name: f"parameter {name!r}", hint=None, where: str = ""):
    """Coerce ``values`` (``coerce``) and validate them against ``model``; the validated instance.

    Parameters
    ----------
    model : pydantic model class or dataclass
    values : dict
        ``{field: value}``; missing fields take their defaults.
    label : callable
        ``name -> how the message names it`` (``"parameter 'seeds'"``, ``"--seeds"``).
    hint : callable, optional
        ``name -> text`` appended after ``"; "`` (e.g. how to pass the value with papermill).
    where : str
        Prefix of the message (``"t1_stationarity: "``).

    Raises
    ------
    ConfigError
        The first problem of ``check_all``, one line: ``LABEL = VALUE is not allowed: expected
        ALLOWED``, or the unknown name and the allowed ones.
    """
    instance, problems = check_all(model, values, label, hint, where)
    if problems:
        raise ConfigError(problems[0][1])
    return instance


# ----------------------------------------------------------------------------------------------
# nrc sweep

#: Argument groups of ``nrc sweep --help``, in order.
SWEEP_GROUPS = ("data", "network", "training", "sweep", "output")
_DEVICE = Annotated[str, Predicate(_is_device), Allowed("'auto', 'cpu', 'cuda' or 'cuda:N'")]
_PATH = Annotated[Optional[str], Allowed("a folder path")]


def _opt(group: str, help: str, default=dataclasses.MISSING, *, factory=dataclasses.MISSING,
         library=dataclasses.MISSING, negatable: bool = False):
    """A :class:`SweepOptions` field: its ``--help`` group and text, and ``nrc.TrainConfig``'s default
    where the library's differs (stated in the help; a test keeps it equal to TrainConfig)."""
    meta = {"group": group, "help": help, "negatable": negatable}
    if library is not dataclasses.MISSING:
        meta["library_default"] = library
    return dataclasses.field(default=default, default_factory=factory, metadata=meta)


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The options of ``nrc sweep`` (its flags and its ``--config`` file keys): one field per option.

    The defaults are the command's embedded experiment: a synthetic Gaussian mixture and a ReLU
    MLP, five weight decays x two seeds, trained on a CPU in well under two minutes, with ranks
    that fall as weight decay grows. Where ``nrc.TrainConfig`` (the library's training
    configuration) has another default, the help says so.
    """

    __pydantic_config__ = {"extra": "forbid"}

    dataset: Literal["synthetic", "mnist", "fashion-mnist", "cifar10"] = _opt(
        "data", "data set; synthetic is a Gaussian mixture (no download)", "synthetic")
    data_root: _PATH = _opt("data", "root of the data files (torchvision layout); default $NRC_DATA", None)
    download: bool = _opt("data", "fetch missing MNIST / Fashion-MNIST / CIFAR-10 files into the data root "
                          "(md5-checked; $NRC_DATA_MIRROR selects the server)", False)
    per_class: PositiveInt = _opt("data", "training samples per class", 50)
    classes: Annotated[int, Ge(2)] = _opt("data", "synthetic: number of classes K", 4)
    dim: PositiveInt = _opt("data", "synthetic: input dimension", 20)
    spread: NonNegative = _opt("data", "synthetic: within-class standard deviation", 1.0)
    widths: NonEmpty(PositiveInt) = _opt("network", "hidden widths, comma-separated", factory=lambda: [64, 64, 64])
    activation: Activation = _opt("network", "activation of the hidden layers", "relu")
    bias: bool = _opt("network", "layers with biases", False, negatable=True)
    residual: bool = _opt("network", "residual MLP z + V sigma(W z)", False, negatable=True)
    loss: Literal["ce", "mse"] = _opt("training", "training loss", "mse", library="ce")
    epochs: Count = _opt("training", "SGD epochs", 150, library=50)
    batch_size: PositiveInt = _opt("training", "minibatch size per member", 32, library=128)
    lr: Positive = _opt("training", "learning rate", 0.05)
    momentum: Momentum = _opt("training", "SGD momentum", 0.9)
    schedule: Literal["cosine", "constant"] = _opt("training", "learning-rate schedule", "cosine")
    regularize_bias: bool = _opt("training", "apply weight decay to biases too", True, negatable=True)
    refine: Literal["none", "gd", "lbfgs"] = _opt(
        "training", "full-batch float64 refinement toward a stationary point", "none")
    refine_steps: Count = _opt("training", "refinement iterations", 0)
    weight_decays: NonEmpty(NonNegative) = _opt("sweep", "weight decays lambda, comma-separated",
                                                factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    seeds: NonEmpty(Count) = _opt("sweep", "seeds, comma-separated", factory=lambda: [0, 1])
    device: _DEVICE = _opt("output", "'auto' is CUDA if available", "auto")
    cache_dir: _PATH = _opt("output", "results cache; default $NRC_CACHE_DIR or .nrc-cache", None)
    no_cache: bool = _opt("output", "train without the cache", False)
    out: _PATH = _opt("output", "write tidy.csv, members.csv, spectra.csv and meta.json here", None)
    tol: Fraction = _opt("output", "relative tolerance tau of the printed rank", 1e-2)
    quiet: bool = _opt("output", "no progress bar", False)


def sweep_options(flags: dict | None = None, config_file=None) -> SweepOptions:
    """Merge defaults < config file < flags (``None`` flags ignored) and validate once.

    Relative folder paths are made absolute against the working directory, now.

    Raises
    ------
    ConfigError
        One line naming the key (``--flag`` or ``file: key``), the value and what is allowed.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        for k, v in load_config_file(config_file).items():
            values[k], sources[k] = v, f"{config_file}: {k}"
    for k, v in (flags or {}).items():
        if v is not None:
            values[k], sources[k] = v, "--" + k.replace("_", "-")
    o = check(SweepOptions, values, label=lambda k: sources.get(k, "--" + k.replace("_", "-")))
    paths = {k: str(Path(os.path.expanduser(getattr(o, k))).absolute()) if getattr(o, k) else None
             for k in ("data_root", "cache_dir", "out")}
    return dataclasses.replace(o, **paths)


def load_config_file(path) -> dict:
    """Read a ``nrc sweep --config`` file (YAML or JSON): a mapping of option -> value.

    Keys may use ``-`` or ``_`` (``weight-decays`` = ``weight_decays``); unknown keys are reported
    by :func:`check`.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read the file ({e.strerror or e})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"--config {path}: not valid YAML{at}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value (e.g. 'epochs: 50'), "
                          f"got {_display(loaded)} ({type(loaded).__name__})")
    out = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = [k for k in out if k not in field_types(SweepOptions)]
    if unknown:
        check(SweepOptions, {unknown[0]: out[unknown[0]]}, label=lambda k: f"option {k!r}", where=f"{path}: ")
    return out


def check_writable(path, what: str) -> Path:
    """Check that ``path`` (a folder, existing or not) can be written, leaving nothing behind.

    An existing folder is probed by creating and removing a file in it; a missing one by probing
    its nearest existing parent (the folder itself is not created).

    Raises
    ------
    ConfigError
        Naming ``what`` (e.g. ``--out``) and the path.
    """
    p = Path(path).absolute()
    probe_dir = p
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise ConfigError(f"{what} = {str(p)!r} is not allowed: {probe_dir} is a file, not a folder")
    probe = probe_dir / f".nrc-write-probe-{uuid.uuid4().hex}"
    try:
        with open(probe, "x"):
            pass
    except OSError as e:
        raise ConfigError(f"{what} = {str(p)!r} is not allowed: cannot write in {probe_dir} "
                          f"({e.strerror or e}); expected a writable folder") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return p


def check_device(device: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``device`` asks for CUDA that is not there."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device = {device!r} is not allowed: CUDA is not available here "
                          f"(torch {torch.__version__}); use --device cpu or --device auto")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device = {device!r} is not allowed: only {torch.cuda.device_count()} "
                          f"CUDA device(s) visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
