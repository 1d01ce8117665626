"""One validation layer for every configuration ``nrc`` reads.

* :class:`SweepOptions` -- the options of ``nrc sweep`` (its flags and its ``--config`` YAML/JSON
  file): allowed keys, types, ranges, built on pydantic v2. :func:`sweep_options` merges the
  defaults, the file and the flags and validates once.
* :func:`coerce_parameter` -- the shared rule that turns a notebook parameter value (from a profile,
  from ``papermill -p`` or ``-y``) into the type its ``parameters`` cell declares; used by
  :mod:`nrc_companion.profiles` and by :func:`typed_parameters`.
* :func:`typed_parameters` -- called by every notebook right after its parameters cell
  (``nrc_companion.typed_parameters(globals())``): coerces the injected values, rejects unknown names.
* :func:`check_writable` -- output folders are probed before any work starts.

Every problem is a :class:`ConfigError` whose message is one line naming the key, the value
given and what is allowed. The command line prints it and exits with code 2.
"""
from __future__ import annotations

import ast
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator)
from typing_extensions import Annotated

__all__ = ["ConfigError", "SweepOptions", "sweep_options", "load_config_file", "check_writable",
           "check_device", "coerce_parameter", "typed_parameters", "SWEEP_ALLOWED"]


class ConfigError(ValueError):
    """Invalid configuration; ``str(err)`` is one line naming the key, the value and what is allowed."""


# ----------------------------------------------------------------------------------------------
# shared value parsers (strings as typed on a command line, scalars where lists are expected)


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
        if s.startswith("[") or s.startswith("("):
            parsed = _parse_text(s)
            return list(parsed) if isinstance(parsed, (list, tuple)) else value
        if "," in s:
            return [_parse_text(v) for v in s.split(",") if v.strip()]
        return [_parse_text(s)] if s else []
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        return value
    return [value]


def _no_bool_number(value):
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str):
        parsed = _parse_text(value)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return parsed
    return value


_Num = BeforeValidator(_no_bool_number)
Finite = Annotated[float, _Num, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, _Num, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, _Num, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, _Num, Field(ge=0)]
PositiveInt = Annotated[int, _Num, Field(ge=1)]

# ----------------------------------------------------------------------------------------------
# nrc sweep

#: What each option of ``nrc sweep`` allows, as printed in error messages.
SWEEP_ALLOWED = {
    "dataset": "one of 'synthetic', 'mnist', 'fashion-mnist', 'cifar10'",
    "data_root": "a folder path",
    "download": "true or false",
    "per_class": "an integer >= 1",
    "classes": "an integer >= 2",
    "dim": "an integer >= 1",
    "spread": "a finite number >= 0",
    "widths": "a non-empty list of integers >= 1, e.g. 64,64",
    "activation": "one of the activations of nrc.ACTIVATIONS",
    "bias": "true or false",
    "residual": "true or false",
    "loss": "'ce' or 'mse'",
    "epochs": "an integer >= 0",
    "batch_size": "an integer >= 1",
    "lr": "a finite number > 0",
    "momentum": "a number in [0, 1)",
    "schedule": "'cosine' or 'constant'",
    "regularize_bias": "true or false",
    "refine": "'none', 'gd' or 'lbfgs'",
    "refine_steps": "an integer >= 0",
    "weight_decays": "a non-empty list of finite numbers >= 0, e.g. 1e-3,1e-2",
    "seeds": "a non-empty list of integers >= 0, e.g. 0,1",
    "device": "'auto', 'cpu', 'cuda' or 'cuda:N'",
    "cache_dir": "a writable folder path",
    "no_cache": "true or false",
    "out": "a writable folder path",
    "tol": "a number in (0, 1)",
    "quiet": "true or false",
}


class SweepOptions(BaseModel):
    """The options of ``nrc sweep`` (flags and ``--config`` file keys), validated.

    Types are coerced the way a user types them (``"10"`` -> 10, ``"no"`` -> False, ``0.1`` ->
    ``[0.1]`` for a list, ``"1e-3,1e-2"`` -> ``[0.001, 0.01]``); every number must be finite.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    dataset: Literal["synthetic", "mnist", "fashion-mnist", "cifar10"] = "synthetic"
    data_root: Optional[str] = None
    download: bool = False
    per_class: PositiveInt = 50
    classes: Annotated[int, _Num, Field(ge=2)] = 4
    dim: PositiveInt = 20
    spread: NonNegative = 1.0
    widths: Annotated[list[PositiveInt], BeforeValidator(_listify), Field(min_length=1)] = [64, 64, 64]
    activation: str = "relu"
    bias: bool = False
    residual: bool = False
    loss: Literal["ce", "mse"] = "mse"
    epochs: Count = 150
    batch_size: PositiveInt = 32
    lr: Positive = 0.05
    momentum: Annotated[float, _Num, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.9
    schedule: Literal["cosine", "constant"] = "cosine"
    regularize_bias: bool = True
    refine: Literal["none", "gd", "lbfgs"] = "none"
    refine_steps: Count = 0
    weight_decays: Annotated[list[NonNegative], BeforeValidator(_listify), Field(min_length=1)] = \
        [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    seeds: Annotated[list[Count], BeforeValidator(_listify), Field(min_length=1)] = [0, 1]
    device: str = "auto"
    cache_dir: Optional[str] = None
    no_cache: bool = False
    out: Optional[str] = None
    tol: Annotated[float, _Num, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-2
    quiet: bool = False

    @field_validator("activation")
    @classmethod
    def _activation(cls, v):
        from nrc.models import ACTIVATIONS

        if v not in ACTIVATIONS:
            raise ValueError(f"one of {sorted(ACTIVATIONS)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(v)):
            raise ValueError("'auto', 'cpu', 'cuda' or 'cuda:N'")
        return v

    @field_validator("data_root", "cache_dir", "out", mode="before")
    @classmethod
    def _path(cls, v):
        if v is None or v == "":
            return None
        if not isinstance(v, (str, os.PathLike)):
            raise ValueError("a folder path")
        # relative paths resolve against the caller's working directory, now
        return str(Path(os.path.expanduser(os.fspath(v))).absolute())


def _display(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value)


def _describe(err: ValidationError, sources: dict[str, str], values: dict) -> str:
    e = err.errors()[0]
    loc = e.get("loc") or ()
    key = str(loc[0]) if loc else "?"
    where = sources.get(key, key)
    if e.get("type") == "extra_forbidden":
        return f"{where}: unknown option {key!r}; allowed: {', '.join(SWEEP_ALLOWED)}"
    given = values.get(key, e.get("input"))
    item = ""
    if len(loc) > 1 and isinstance(loc[1], int):
        item = f" (item {loc[1]}: {_display(e.get('input'))})"
    allowed = SWEEP_ALLOWED.get(key, e.get("msg", "a valid value"))
    return f"{where} = {_display(given)}{item} is not allowed; expected {allowed}"


def sweep_options(flags: dict | None = None, config_file=None) -> SweepOptions:
    """Merge defaults < config file < flags (``None`` flags ignored) and validate once.

    Raises
    ------
    ConfigError
        One line naming the key (``--flag`` or ``file: key``), the value and what is allowed.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file is not None:
        for k, v in load_config_file(config_file).items():
            values[k] = v
            sources[k] = f"{config_file}: {k}"
    for k, v in (flags or {}).items():
        if v is not None:
            values[k] = v
            sources[k] = "--" + k.replace("_", "-")
    try:
        return SweepOptions(**values)
    except ValidationError as err:
        raise ConfigError(_describe(err, sources, values)) from None


def load_config_file(path) -> dict:
    """Read a ``nrc sweep --config`` file (YAML or JSON): a mapping of option -> value.

    Keys may use ``-`` or ``_`` (``weight-decays`` = ``weight_decays``).
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
                          f"got {_short(loaded)} ({type(loaded).__name__})")
    out = {}
    for k, v in loaded.items():
        key = str(k).replace("-", "_")
        if key not in SWEEP_ALLOWED:
            import difflib

            hint = difflib.get_close_matches(key, list(SWEEP_ALLOWED), n=1)
            raise ConfigError(f"{path}: unknown option {str(k)!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; allowed: {', '.join(SWEEP_ALLOWED)}")
        out[key] = v
    return out


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


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


# ----------------------------------------------------------------------------------------------
# notebook parameters


def _base_type(type_name: str) -> tuple[str, bool]:
    t = type_name.replace(" ", "")
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", t)
    if m:
        return m.group(1).split("[", 1)[0].lower(), True
    parts = [p for p in t.split("|") if p]
    nullable = "None" in parts
    parts = [p for p in parts if p != "None"]
    base = parts[0].split("[", 1)[0].removeprefix("typing.").lower() if len(parts) == 1 else "any"
    return base, nullable


def _element_kind(default) -> str | None:
    """'float', 'int', 'str' or None: the element type all items of a default list share."""
    if not isinstance(default, (list, tuple)) or not default:
        return None
    kinds = set()
    for v in default:
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            return None
    if kinds <= {"int", "float"} and "float" in kinds:
        return "float"
    return kinds.pop() if len(kinds) == 1 else None


def _to_float(v):
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, str):
        v = _parse_text(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
    if not isinstance(v, (int, float)):
        raise ValueError
    f = float(v)
    if not math.isfinite(f):
        raise ValueError
    return f


def _to_int(v):
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, str):
        v = _parse_text(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise ValueError


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _to_bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _BOOLS:
        return _BOOLS[v.strip().lower()]
    raise ValueError


def _yaml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _yaml_form(name: str, value) -> str:
    """The papermill ``-y`` option that passes ``value`` with its type, e.g. ``-y "seeds: [0, 1]"``."""
    return f'-y "{name}: {_yaml_text(value)}"'


_EXAMPLES = {"float": 0.01, "int": 3, "bool": True, "str": "text", "list": [1, 2], "dict": {"a": 1},
             "tuple": [1, 2]}


def coerce_parameter(name: str, type_name: str, value, default=None):
    """Coerce one notebook parameter to the type its ``parameters`` cell declares.

    Rules (the same for profiles, ``papermill -p`` and ``-y``): ``float`` takes any finite number
    or numeric text (``1e-3``); ``int`` takes integers and integral floats; ``bool`` takes
    booleans, 0/1 and yes/no/true/false/on/off; ``list`` takes a list, a tuple, a scalar (``0`` ->
    ``[0]``) or text (``"[0.01, 0.1]"``, ``"0.01,0.1"``), and when every item of the default
    list is a float (or an int, or a string) the items are coerced/checked alike; ``str`` takes
    text only; ``X | None`` also takes ``None``. Other annotations pass values through.

    Raises
    ------
    ConfigError
        One line naming the parameter, the value, its type and the ``-y`` form to use.
    """
    base, nullable = _base_type(type_name)
    if value is None and nullable:
        return None
    try:
        if base == "float":
            return _to_float(value)
        if base == "int":
            return _to_int(value)
        if base == "bool":
            return _to_bool(value)
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if base in ("list", "tuple"):
            items = _listify(value)
            if not isinstance(items, list):
                raise ValueError
            kind = _element_kind(default)
            conv = {"float": _to_float, "int": _to_int, "bool": _to_bool}.get(kind)
            if conv is not None:
                items = [conv(v) for v in items]
            elif kind == "str" and not all(isinstance(v, str) for v in items):
                raise ValueError
            return tuple(items) if base == "tuple" else items
        if base == "dict":
            v = _parse_text(value) if isinstance(value, str) else value
            if not isinstance(v, dict):
                raise ValueError
            return v
    except (ValueError, TypeError):
        example = default if default is not None else _EXAMPLES.get(base, "...")
        kind = _element_kind(default) if base in ("list", "tuple") else None
        what = {"float": "a finite number", "int": "an integer", "bool": "a boolean (true/false)",
                "str": "a string", "dict": "a mapping"}.get(base, f"a {type_name}")
        if kind is not None:
            what = f"a list of {dict(float='finite numbers', int='integers', bool='booleans', str='strings')[kind]}"
        raise ConfigError(f"parameter {name!r} = {_short(value)} is not allowed: expected {what} ({type_name}); "
                          f"pass it with papermill as {_yaml_form(name, example)}") from None
    return value


def _declarations(source: str) -> dict[str, tuple[str, Any]] | None:
    """``{name: (type, default)}`` of a parameters cell, or None when ``source`` is not one."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            return None
        try:
            default = ast.literal_eval(node.value) if node.value is not None else None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            default = None
        out[node.target.id] = (ast.unparse(node.annotation), default)
    return out or None


def _assigned_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def typed_parameters(namespace: dict) -> dict:
    """Coerce a notebook's parameters to their declared types; reject unknown injected names.

    Call it in the first code cell after the ``parameters`` cell::

        nrc_companion.typed_parameters(globals())

    papermill injects its values (``-p name value``, ``-y "name: value"``, profiles) in a cell
    right after the parameters cell, as plain assignments and without checking them. This reads
    the declarations (``name: type = default``) of the parameters cell from the kernel's input
    history (``In``; ``__annotations__`` outside IPython), coerces every declared parameter in
    ``namespace`` in place with :func:`nrc_companion.config.coerce_parameter` (``-p weight_decays "[0.01, 0.1]"``,
    ``-p rank_tol 1e-3``, ``-p seeds 0`` all work), and fails on a name papermill injected that
    the notebook does not declare (papermill itself only warns).

    Returns
    -------
    dict
        ``{name: value}`` of the declared parameters, after coercion.

    Raises
    ------
    nrc_companion.config.ConfigError
        One line: the parameter, its type and the ``-y`` form to use; or the unknown name and the
        declared ones.
    """
    history = namespace.get("In")
    decl: dict[str, tuple[str, Any]] | None = None
    injected: list[str] = []
    if isinstance(history, (list, tuple)) and history:
        cells = [str(c) for c in history[:-1]]  # the last entry is the cell running now
        for i in range(len(cells) - 1, -1, -1):
            d = _declarations(cells[i])
            if d:
                decl = d
                for later in cells[i + 1:]:
                    if later.lstrip().startswith("# Parameters"):
                        injected += _assigned_names(later)
                break
    if decl is None:
        ann = namespace.get("__annotations__") or {}
        decl = {k: (getattr(t, "__name__", str(t)), None) for k, t in ann.items()}
    if not decl:
        raise ConfigError("typed_parameters: no parameters cell found (a cell of 'name: type = value' lines "
                          "must run before this call)")
    unknown = [n for n in dict.fromkeys(injected) if n not in decl]
    if unknown:
        import difflib

        n = unknown[0]
        hint = difflib.get_close_matches(n, list(decl), n=1)
        raise ConfigError(f"unknown parameter {n!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f": this notebook declares only {', '.join(decl)}")
    out = {}
    for name, (type_name, default) in decl.items():
        if name in namespace:
            namespace[name] = coerce_parameter(name, type_name, namespace[name], default)
            out[name] = namespace[name]
    return out
