"""Largest relative change of every recorded number between two runs of the notebooks.

    python benchmarks/compare_runs.py OLD_RUN NEW_RUN [--out FILE.md]
    python benchmarks/compare_runs.py git:93d851b book/published --out benchmarks/run_changes.md

``OLD_RUN`` and ``NEW_RUN`` are run folders of ``nrc reproduce`` (``book/published``), or
``git:COMMIT`` for the run committed in ``book/published`` at that commit. For every notebook, every result table
(``results/<notebook>/*.csv``) present in both runs is matched row by row on its identifier
columns (strings, integers, and the weight decay / spread / budget grids) and every numeric
column present in both is compared: the largest relative change ``|new - old| / |old|`` per
notebook, and the column where it occurs. Recorded scalar values (``results/<notebook>.json``,
``values``) are compared the same way. Speed work must not move a verdict; this shows by how
much it moved the numbers, to set beside the spread between kernel paths and seeds
(``benchmarks/kernel_paths.py``). A second table lists every check of the registry whose verdict
differs between the two runs, with what each run measured.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

#: Columns and values that are rounding errors or wall times, not results: left out of the comparison.
SKIP = ("identity", "_err", "gap", "seconds", "relative difference", "kink_fraction")


def _skip(name: str) -> bool:
    return any(s in name for s in SKIP)


#: Float columns that identify a row rather than measure it (grids the notebooks sweep).
GRID = {"weight_decay", "spread", "budget", "refine_steps", "lr", "epochs", "checkpoint", "s", "t", "lambda"}


def _ids(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in GRID or not pd.api.types.is_float_dtype(df[c])]


def _rel(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(new - old) / np.abs(old)
    r[(new == old) | (np.isnan(new) & np.isnan(old))] = 0.0
    r[(old == 0) & (new != 0)] = np.inf
    return r


def compare_tables(old: pd.DataFrame, new: pd.DataFrame) -> tuple[float, str, int]:
    """(largest relative change, its column, rows matched) of two tables."""
    ids = [c for c in _ids(old) if c in new.columns and c in _ids(new)]
    nums = [c for c in old.columns if c in new.columns and c not in ids
            and pd.api.types.is_numeric_dtype(old[c]) and pd.api.types.is_numeric_dtype(new[c]) and not _skip(c)]
    if not nums:
        return 0.0, "", 0
    if ids:
        old = old.drop_duplicates(ids)
        new = new.drop_duplicates(ids)
        m = old.merge(new, on=ids, suffixes=("_old", "_new"))
    else:
        if len(old) != len(new):
            return math.nan, "row count differs", 0
        m = pd.concat([old[nums].add_suffix("_old").reset_index(drop=True),
                       new[nums].add_suffix("_new").reset_index(drop=True)], axis=1)
    worst, where = 0.0, ""
    for c in nums:
        r = _rel(m[c + "_new"].to_numpy(float), m[c + "_old"].to_numpy(float))
        if r.size and np.nanmax(r) > worst:
            worst, where = float(np.nanmax(r)), c
    return worst, where, len(m)


def compare_runs(old_dir: Path, new_dir: Path) -> pd.DataFrame:
    rows = []
    names = sorted({p.stem for p in (new_dir / "results").glob("*.json")} & {p.stem for p in (old_dir / "results").glob("*.json")})
    for nb in names:
        worst, where, matched = 0.0, "", 0
        for csv in sorted((new_dir / "results" / nb).glob("*.csv")):
            old_csv = old_dir / "results" / nb / csv.name
            if not old_csv.exists():
                continue
            w, c, n = compare_tables(pd.read_csv(old_csv), pd.read_csv(csv))
            matched += n
            if w > worst or (math.isnan(w) and not math.isnan(worst)):
                worst, where = w, f"{csv.stem}.{c}"
        ov = json.loads((old_dir / "results" / f"{nb}.json").read_text()).get("values", {})
        nv = json.loads((new_dir / "results" / f"{nb}.json").read_text()).get("values", {})
        vworst, vwhere = 0.0, ""
        for k in sorted(k for k in set(ov) & set(nv) if not _skip(k)):
            a, b = ov[k], nv[k]
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                r = _rel(np.array([float(b)]), np.array([float(a)]))[0]
                if r > vworst:
                    vworst, vwhere = float(r), k
        rows.append({"notebook": nb, "rows_matched": matched, "max_rel_change_tables": worst, "where": where,
                     "max_rel_change_values": vworst, "value": vwhere})
    return pd.DataFrame(rows)


def _verdicts(run: Path) -> dict[str, dict]:
    """Every check of every notebook of a run, by id."""
    out = {}
    for f in sorted((run / "results").glob("*.json")):
        for c in json.loads(f.read_text()).get("checks", []):
            out[c["id"]] = c
    return out


def moved_verdicts(old_dir: Path, new_dir: Path) -> pd.DataFrame:
    """Checks present in both runs whose verdict differs, with what each run measured."""
    return _moved(_verdicts(old_dir), _verdicts(new_dir))


def _moved(old: dict[str, dict], new: dict[str, dict]) -> pd.DataFrame:
    rows = [{"check": f"`{k}`", "old verdict": old[k]["verdict"], "old measured": old[k].get("measured", ""),
             "new verdict": new[k]["verdict"], "new measured": new[k].get("measured", "")}
            for k in sorted(set(old) & set(new)) if old[k]["verdict"] != new[k]["verdict"]]
    return pd.DataFrame(rows, columns=["check", "old verdict", "old measured", "new verdict", "new measured"])


def _commit(run: Path) -> str:
    return str(json.loads((run / "status.json").read_text()).get("commit", "?"))[:10]


def report(old_dir: Path, new_dir: Path, old_name: str, new_name: str) -> str:
    """Both tables as Markdown, headed by what was compared."""
    df = compare_runs(old_dir, new_dir)
    old_v, new_v = _verdicts(old_dir), _verdicts(new_dir)
    moved, n_checks = _moved(old_v, new_v), len(set(old_v) & set(new_v))
    lines = [f"`{new_name}` (run at commit `{_commit(new_dir)}`) against `{old_name}` (run at commit "
             f"`{_commit(old_dir)}`): per notebook, the largest relative change of a number in its result "
             f"tables and of its recorded values, and where it occurs.", "",
             df.to_markdown(index=False, floatfmt=".2g"), ""]
    if moved.empty:
        lines.append(f"All {n_checks} verdicts are the same in both runs.")
    else:
        lines += [f"{len(moved)} of the {n_checks} verdicts differ between the two runs:", "",
                  moved.to_markdown(index=False)]
    return "\n".join(lines) + "\n"


def _run_dir(spec: str, tmp: Path) -> Path:
    """A run folder, or ``git:COMMIT``: ``book/published`` at that commit, extracted into ``tmp``."""
    if not spec.startswith("git:"):
        return Path(spec)
    repo = Path(__file__).resolve().parent.parent
    tar = subprocess.run(["git", "archive", spec[4:], "book/published/status.json", "book/published/results"],
                         cwd=repo, capture_output=True, check=False)
    if tar.returncode:
        raise ValueError(f"{spec}: no such commit ({tar.stderr.decode().strip().splitlines()[-1]})")
    tarfile.open(fileobj=io.BytesIO(tar.stdout)).extractall(tmp, filter="data")
    return tmp / "book" / "published"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", help="a run folder, or git:COMMIT for book/published at that commit")
    ap.add_argument("new", help="a run folder, or git:COMMIT")
    ap.add_argument("--out", type=Path, help="write the tables as Markdown here")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            old, new = _run_dir(a.old, Path(tmp) / "old"), _run_dir(a.new, Path(tmp) / "new")
            for name, d in ((a.old, old), (a.new, new)):
                if not (d / "status.json").exists():
                    raise ValueError(f"{name}: not a run folder (no status.json); give a folder of nrc reproduce "
                                     "or git:COMMIT")
        except ValueError as e:
            print(f"compare_runs: {e}", file=sys.stderr)
            return 2
        text = report(old, new, a.old, a.new)
    print(text, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
