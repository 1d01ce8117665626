"""Run profiles: which notebooks run, in which order, with which parameter values.

A notebook in ``notebooks/`` is a papermill source notebook with exactly one code cell tagged
``parameters``; that cell holds one typed, commented default per line::

    epochs: int = 200  # epochs per member
    weight_decays: list = [1e-4, 1e-3]  # the grid of lambda

A profile (``profiles/NAME.yaml``) chooses values per notebook::

    profile: smoke            # name
    description: CPU, seconds per notebook
    device: cpu               # recorded in status.json
    notebooks:                # ordered: the run order
      t1_stationarity:        # notebook file stem in notebooks/
        epochs: 10
      e1_rank_vs_weight_decay: {}

:func:`notebook_parameters` reads a notebook's parameters cell, :func:`load_profile` reads a
profile and :func:`validate_profile` checks it against the notebooks, reporting every problem at
once in a single :class:`ProfileError`.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Parameter", "Profile", "ProfileError", "notebook_parameters", "load_profile",
           "validate_profile", "find_profile", "list_notebooks", "PROFILE_KEYS"]

#: Top-level keys a profile may have.
PROFILE_KEYS = ("profile", "description", "device", "notebooks", "cluster")


class ProfileError(ValueError):
    """A profile that cannot be run; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [message])


@dataclass(frozen=True)
class Parameter:
    """One line of a notebook's ``parameters`` cell: ``name: type = default  # help``."""

    name: str
    type: str
    default: Any
    help: str = ""
    line: int = 0

    def accepts(self, value) -> bool:
        """Whether ``value`` has this parameter's shape: a list for a list, a single value otherwise.

        This only routes ``nrc reproduce --set KEY=VALUE`` (``refine_steps=0`` goes to the notebooks
        whose ``refine_steps`` is a number, not to T1's list of budgets); whether the value is
        allowed is :func:`validate_profile`'s question, answered by the notebook's model.
        """
        return isinstance(value, (list, tuple)) == (self.type.split("[", 1)[0] in ("list", "tuple"))


@dataclass
class Profile:
    """A parsed profile. ``notebooks`` maps notebook stem -> parameter overrides, in run order."""

    name: str
    description: str = ""
    device: str = ""
    notebooks: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def unknown_keys(self) -> list[str]:
        return [k for k in self.raw if k not in PROFILE_KEYS]


def _type_of(value) -> str:
    return "None" if value is None else type(value).__name__


# ----------------------------------------------------------------------------------------------
# notebooks


def _read_notebook(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read notebook: {e}") from e


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _comments(source: str) -> dict[int, str]:
    """Line number (1-based) -> comment text (without ``#``)."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def notebook_parameters(path) -> dict[str, Parameter]:
    """The parameters declared in a notebook's ``parameters``-tagged cell, in order.

    Every statement of that cell must be ``name: type = literal`` (blank and comment lines are
    fine); the comment after ``#`` on the statement's line is the parameter's help text.

    Raises
    ------
    ValueError
        No ``parameters`` cell, more than one, a statement that is not an annotated literal
        assignment, or a default that does not fit its annotation; the message names the notebook
        and the line (counted within the cell).
    """
    path = Path(path)
    nb = _read_notebook(path)
    cells = [c for c in nb.get("cells", [])
             if c.get("cell_type") == "code" and "parameters" in (c.get("metadata", {}).get("tags") or [])]
    if not cells:
        raise ValueError(f"{path.name}: no code cell tagged 'parameters'")
    if len(cells) > 1:
        raise ValueError(f"{path.name}: {len(cells)} code cells tagged 'parameters'; exactly one is allowed")
    source = _source(cells[0])
    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"{path.name}: parameters cell, line {e.lineno}: syntax error: {e.msg}") from e
    comments = _comments(source)
    params: dict[str, Parameter] = {}
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1:node.end_lineno]).strip()
        where = f"{path.name}: parameters cell, line {node.lineno} ({text!r})"
        if not isinstance(node, ast.AnnAssign):
            raise ValueError(f"{where}: expected an annotated assignment 'name: type = value'")
        if not isinstance(node.target, ast.Name):
            raise ValueError(f"{where}: the target must be a plain name")
        if node.value is None:
            raise ValueError(f"{where}: the parameter has no default value")
        try:
            default = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
            raise ValueError(f"{where}: the default is not a Python literal") from e
        name, type_name = node.target.id, ast.unparse(node.annotation)
        if name in params:
            raise ValueError(f"{where}: parameter {name!r} is declared twice")
        help_ = next((comments[i] for i in range(node.end_lineno, node.lineno - 1, -1) if i in comments), "")
        params[name] = Parameter(name, type_name, default, help_, node.lineno)
    from .config import check_all  # pydantic: only once a cell has been read
    from .params import cell_model

    _, problems = check_all(cell_model(path.stem, {p.name: (p.type, p.default, p.help) for p in params.values()}),
                            {p.name: p.default for p in params.values()}, label=lambda k: f"default of {k!r}")
    for name, problem in problems:
        p = params[name]
        raise ValueError(f"{path.name}: parameters cell, line {p.line}: {problem} ({p.type})")
    return params


def list_notebooks(notebooks_dir="notebooks") -> list[str]:
    """Stems of the ``*.ipynb`` files in ``notebooks_dir`` (sorted)."""
    d = Path(notebooks_dir)
    return sorted(p.stem for p in d.glob("*.ipynb")) if d.is_dir() else []


# ----------------------------------------------------------------------------------------------
# profiles


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` (no dot) as a float, as YAML 1.2 and Python do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def find_profile(path_or_name, notebooks_dir="notebooks") -> Path:
    """Resolve a profile argument to a file.

    An existing file, or anything that looks like a path (has a directory part or a
    ``.yaml``/``.yml`` suffix), is used as given. A bare name means ``profiles/NAME.yaml`` in the
    repository root, i.e. next to ``notebooks_dir`` (then in the working directory).
    """
    p = Path(path_or_name)
    looks_like_path = p.suffix in (".yaml", ".yml") or len(p.parts) > 1
    if p.is_file() or looks_like_path:
        if not p.is_file():
            raise FileNotFoundError(f"profile file not found: {p}")
        return p
    roots = [Path(notebooks_dir).resolve().parent, Path.cwd()]
    candidates = []
    for root in dict.fromkeys(roots):
        for suffix in (".yaml", ".yml"):
            c = root / "profiles" / f"{p.name}{suffix}"
            if c.is_file():
                return c
        candidates.append(root / "profiles")
    available = sorted({f.stem for d in candidates if d.is_dir() for f in d.glob("*.y*ml")})
    raise FileNotFoundError(
        f"no profile named {str(path_or_name)!r} (looked in {', '.join(str(c) for c in candidates)}); "
        f"available: {', '.join(available) or 'none'}")


def load_profile(path_or_name, notebooks_dir="notebooks") -> Profile:
    """Read a profile from a path or a name (``profiles/NAME.yaml``, see :func:`find_profile`).

    Only the file's structure is checked here (a mapping with a ``notebooks`` mapping of
    mappings); everything else is :func:`validate_profile`'s job. A notebook listed with no value
    (``name:``) means no overrides. The name defaults to the file stem.
    """
    path = find_profile(path_or_name, notebooks_dir)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a mapping, got {_type_of(raw)}")
    problems = []
    notebooks_raw = raw.get("notebooks") or {}
    if not isinstance(notebooks_raw, dict):
        problems.append(f"'notebooks' must be a mapping of notebook name -> parameters, "
                        f"got {_type_of(notebooks_raw)}")
        notebooks_raw = {}
    notebooks: dict[str, dict] = {}
    for nb, params in notebooks_raw.items():
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problems.append(f"{nb}: parameters must be a mapping, got {_type_of(params)}")
            continue
        notebooks[str(nb)] = dict(params)
    for key in ("profile", "description", "device"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            problems.append(f"'{key}' must be a string, got {_type_of(raw[key])}")
    if problems:
        raise ProfileError(_format(path, problems), problems)
    return Profile(name=str(raw.get("profile") or path.stem), description=str(raw.get("description") or ""),
                   device=str(raw.get("device") or ""), notebooks=notebooks, path=path, raw=raw)


def _format(where, problems: list[str]) -> str:
    """One line for one problem (``nrc reproduce`` prints it and exits 2); a list for several."""
    if len(problems) == 1:
        return f"profile {where} is invalid: {problems[0]}"
    return f"profile {where} is invalid ({len(problems)} problems):\n" + "\n".join(f"  - {p}" for p in problems)


def validate_profile(profile: Profile, notebooks_dir="notebooks") -> dict[str, dict[str, Parameter]]:
    """Check a profile against the notebooks; raise one :class:`ProfileError` listing every problem.

    Checks: unknown top-level keys; notebooks listed but absent from ``notebooks_dir``; notebooks
    in ``notebooks_dir`` missing from the profile; unreadable parameters cells; and every
    notebook's values against its parameter model (:func:`nrc_companion.params.model_for`: unknown
    names, values outside what the model allows), in the format of :func:`nrc_companion.config.check`.

    Returns the parameters of every listed notebook (``{notebook: {name: Parameter}}``).
    """
    notebooks_dir = Path(notebooks_dir)
    problems: list[str] = []
    for key in profile.unknown_keys:
        problems.append(f"unknown top-level key {key!r} (allowed: {', '.join(PROFILE_KEYS)})")
    if profile.raw.get("cluster") is not None:  # options of --executor ray|slurm (nrc.executors)
        from nrc.executors import ExecutorError, parse_executor

        try:
            parse_executor(profile.raw["cluster"])
        except ExecutorError as e:
            problems.append(f"cluster: {e}")
    if not notebooks_dir.is_dir():
        problems.append(f"notebooks directory {notebooks_dir} does not exist")
    present = list_notebooks(notebooks_dir)
    declared: dict[str, dict[str, Parameter]] = {}
    for nb, values in profile.notebooks.items():
        path = notebooks_dir / f"{nb}.ipynb"
        if not path.is_file():
            hint = difflib.get_close_matches(nb, present, n=1)
            problems.append(f"unknown notebook {nb!r}: no {path}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            continue
        try:
            params = notebook_parameters(path)
        except ValueError as e:
            problems.append(str(e))
            continue
        declared[nb] = params
        from .config import check_all  # pydantic: only once a profile is checked
        from .params import model_for

        # the notebook's own model: the check its validate_parameters call makes when it runs
        problems += [message for _, message in check_all(model_for(nb, params), values, where=f"{nb}: ")[1]]
    for nb in present:
        if nb not in profile.notebooks:
            problems.append(f"notebook {nb!r} (in {notebooks_dir}) is missing from the profile; "
                            f"list it (with {{}} for its defaults) so the profile covers every notebook")
    if problems:
        raise ProfileError(_format(f"{profile.name!r}" + (f" ({profile.path})" if profile.path else ""),
                                   problems), problems)
    return declared
