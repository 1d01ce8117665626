"""Largest relative change of every recorded number between two runs of the notebooks.

    python benchmarks/compare_runs.py OLD_RUN NEW_RUN [--out FILE.md]

``OLD_RUN`` and ``NEW_RUN`` are run folders of ``nrc reproduce`` (``book/published``, or a git
tree extracted with ``git archive``). For every notebook, every result table
(``results/<notebook>/*.csv``) present in both runs is matched row by row on its identifier
columns (strings, integers, and the weight decay / spread / budget grids) and every numeric
column present in both is compared: the largest relative change ``|new - old| / |old|`` per
notebook, and the column where it occurs. Recorded scalar values (``results/<notebook>.json``,
``values``) are compared the same way. Speed work must not move a verdict; this shows by how
much it moved the numbers, to set beside the spread between kernel paths and seeds
(``benchmarks/kernel_paths.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path, help="write the table as Markdown here")
    a = ap.parse_args(argv)
    df = compare_runs(a.old, a.new)
    text = df.to_markdown(index=False, floatfmt=".2g") if hasattr(df, "to_markdown") else df.to_string(index=False)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
