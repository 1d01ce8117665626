"""The result cache: trained sweep members keyed by everything that determines them.

:class:`ResultStore` trains through a cache keyed by everything that determines a member's result
(architecture, training config, data fingerprint, the member's scalars, the trainer's version). A
repeated run loads instead of retraining; any change recomputes; extending a grid trains only the
new members; a killed run resumes from its checkpoint; two processes never train the same member
at once (a lock per member) nor leave a damaged entry (temporary file + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from .data import Dataset
from .models import Architecture
from .provenance import environment
from .timing import timed
from .train import Sweep, TrainConfig, _validate_members, train

__all__ = ["ResultStore", "fingerprint", "TRAINER_VERSION", "member_entry", "atomic_write", "MemberLocks"]

#: Bump when a change to the trainer changes results, so old cache entries are not reused.
TRAINER_VERSION = 2  # 2: float64 L-BFGS refinement batched across members


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(obj) -> str:
    """Short sha256 of a JSON-able object (sorted keys), used as a cache key."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:20]


def _data_fingerprint(d: Dataset) -> str:
    h = hashlib.sha256()
    for t in (d.x_train, d.y_train):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(_canonical({"name": d.name, "classes": d.num_classes}).encode())
    return h.hexdigest()[:20]


def _log_training(*, trained: int, loaded: int, seconds: float) -> None:
    """Append one line ``{"trained", "loaded", "seconds"}`` to ``$NRC_TRAIN_LOG`` when set.

    The runner sets it per notebook and puts the sums in ``status.json`` (training seconds and
    members loaded from the cache, shown on the book's status page).
    """
    path = os.environ.get("NRC_TRAIN_LOG")
    if not path:
        return
    line = json.dumps({"trained": int(trained), "loaded": int(loaded), "seconds": round(float(seconds), 3)})
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass  # counting is best effort: never fail a training because the log is unwritable


def member_entry(sweep: Sweep, j: int, member: dict, env: dict) -> dict:
    """The cache entry of member ``j`` of a trained (sub-)sweep."""
    # clone: torch.save of a view writes the whole stacked storage (M times the member)
    return {"params": {k: v[j].clone() for k, v in sweep.params.items()},
            "history": {k: v[:, j] for k, v in sweep.history.items()},
            "diverged": bool(sweep.diverged[j]), "member": member,
            "seconds": sweep.seconds / sweep.num_members, "device": sweep.device, "meta": env}


def atomic_write(obj, path: Path) -> None:
    """``torch.save`` to a temporary file unique to this writer, then rename it into place.

    The rename is atomic on POSIX filesystems (also NFS), so a reader sees the old entry or the
    whole new one; a unique temporary name (pid + random) means two writers of the same entry
    never write into the same file (a shared ``.tmp`` name would interleave their bytes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class MemberLocks:
    """Non-blocking exclusive ``fcntl.flock`` locks on ``<dir>/<key>.lock``; ``held`` are the ones taken.

    flock locks belong to the open file, so the OS releases them when the holder exits or is
    killed: a dead trainer never leaves a stale lock. Lock files stay (deleting them would race
    with a process about to lock the same path). Without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, folder: Path, keys):
        self.folder, self.keys, self.files = Path(folder), list(keys), []

    def __enter__(self) -> list[str]:
        try:
            import fcntl
        except ImportError:
            return list(self.keys)
        self.folder.mkdir(parents=True, exist_ok=True)
        held = []
        for k in self.keys:
            f = open(self.folder / f"{k}.lock", "a")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self.files.append(f)
            held.append(k)
        return held

    def __exit__(self, *exc):
        for f in self.files:
            f.close()  # closing drops the flock
        self.files = []

    @staticmethod
    def wait(folder: Path, keys) -> None:
        """Block until no process holds any of ``keys``' locks."""
        try:
            import fcntl
        except ImportError:
            return
        for k in keys:
            with open(Path(folder) / f"{k}.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)


class ResultStore:
    """A cache of trained members on disk.

    Parameters
    ----------
    root : path, optional
        Cache directory; default ``$NRC_CACHE_DIR`` or ``.nrc-cache`` in the working directory.
    """

    def __init__(self, root=None):
        self.root = Path(root or os.environ.get("NRC_CACHE_DIR") or ".nrc-cache")

    def member_key(self, arch: Architecture, config: TrainConfig, data: Dataset, member: dict) -> str:
        """Cache key of one member: everything that determines its trained parameters.

        Architecture, training config, data fingerprint, the member's scalars, the trainer's
        version and the installed torch and numpy versions (a library upgrade can change the
        numbers, so it retrains instead of reusing old results).
        """
        return self.member_keys(arch, config, data, [member])[0]

    def member_keys(self, arch: Architecture, config: TrainConfig, data, members: list[dict]) -> list[str]:
        """:meth:`member_key` of each member, on ``data`` (one Dataset for all, or one per member).

        Each distinct data set is hashed once (all its training bytes: 22 ms for 10 000 MNIST
        images), not once per member."""
        datasets = list(data) if not isinstance(data, Dataset) else [data] * len(members)
        if len(datasets) != len(members):
            raise ValueError(f"got {len(datasets)} data sets for {len(members)} members")
        digests: dict[int, str] = {}
        for d in datasets:
            if id(d) not in digests:
                digests[id(d)] = _data_fingerprint(d)
        common = {"arch": arch.to_dict(), "config": config.to_dict(), "trainer": TRAINER_VERSION,
                  "torch": torch.__version__, "numpy": np.__version__}
        return [fingerprint({**common, "data": digests[id(d)], "member": m}) for d, m in zip(datasets, members)]

    @timed("training")  # nrc.timing: the notebook's "training" phase (cache loads included)
    def train(self, arch: Architecture, data, members: list[dict], config: TrainConfig = TrainConfig(), *,
              device=None, progress=None, callback=None, executor=None) -> Sweep:
        """Like :func:`nrc.train`, but loads members trained before with the same settings.

        Only the missing members are trained, by ``executor`` (:mod:`nrc.executors`): ``"local"``
        trains them here as one stacked model, checkpointed under ``root/checkpoints`` so a killed
        run resumes; ``"ray"`` / ``"slurm"`` (or an :class:`~nrc.executors.Executor`) train them
        in shards on a cluster, and this process writes the entries the shards send back. Default:
        ``$NRC_EXECUTOR``, else local. Each finished member is written atomically with its
        provenance; a diverged member is cached too (it would diverge again).

        Two processes sharing the cache train a member once: a member is trained only under its
        lock (``root/locks/KEY.lock``, an ``fcntl`` lock the OS drops when its holder dies); a
        process that finds a member locked waits for the lock, then loads the entry, and trains
        the member itself only if the holder died before writing it.

        Raises
        ------
        nrc.executors.ShardError
            Shards that still failed after their retries (named); the other shards' members are
            cached, so a rerun trains only what is missing.
        """
        from .executors import parse_executor

        spec = parse_executor(executor)
        members = _validate_members(members, config)
        per_member = not isinstance(data, Dataset)
        datasets = list(data) if per_member else [data] * len(members)
        keys = self.member_keys(arch, config, datasets, members)
        loaded = {k: self._load(k) for k in dict.fromkeys(keys)}  # damaged entries: set aside, recomputed
        trained, seconds = 0, 0.0
        missing = [k for k, v in loaded.items() if v is None]
        while missing:
            with MemberLocks(self.root / "locks", missing) as held:
                for k in held:  # another process may have finished it between our load and our lock
                    loaded[k] = self._load(k)
                todo = [k for k in held if loaded[k] is None]
                if todo:
                    first = {k: keys.index(k) for k in todo}
                    sub_members = [members[first[k]] for k in todo]
                    sub_data = [datasets[first[k]] for k in todo] if per_member else data
                    t0 = time.perf_counter()
                    if spec.kind == "local":
                        ckpt = self.root / "checkpoints" / f"{fingerprint(todo)}.pt"
                        sweep = train(arch, sub_data, sub_members, config, device=device,
                                      checkpoint=ckpt, progress=progress, callback=callback)
                        env = environment()
                        for j, k in enumerate(todo):
                            self.write(k, member_entry(sweep, j, sub_members[j], env))
                    else:
                        from .executors import train_shards

                        train_shards(spec, arch, sub_data, sub_members, todo, config, root=self.root,
                                     write=self.write, device=device, callback=callback,
                                     log=None if progress is False else _stderr)
                    seconds += time.perf_counter() - t0
                    trained += len(todo)
                    for k in todo:
                        loaded[k] = self._load(k)
            waiting = [k for k in missing if k not in held]
            if waiting:
                MemberLocks.wait(self.root / "locks", waiting)  # their holders finished or died
                for k in waiting:
                    loaded[k] = self._load(k)
            missing = [k for k in waiting if loaded[k] is None]  # a holder died: train them ourselves
        _log_training(trained=trained, loaded=len(set(keys)) - trained, seconds=seconds)
        entries = [loaded[k] for k in keys]
        params = {k: torch.stack([e["params"][k] for e in entries]) for k in entries[0]["params"]}
        history = {k: np.stack([e["history"][k] for e in entries], axis=1) for k in entries[0]["history"]}
        return Sweep(arch, config, members, params, history,
                     np.array([e["diverged"] for e in entries]),
                     sum(e["seconds"] for e in entries), entries[0]["device"])

    def write(self, key: str, entry: dict) -> None:
        """Write one cache entry atomically (a unique temporary file, then a rename)."""
        atomic_write(entry, self._path(key))

    def cached(self, arch, config, data, members) -> list[bool]:
        """Which members are already in the cache."""
        members = _validate_members(members, config)
        return [self._path(k).exists() for k in self.member_keys(arch, config, data, members)]

    def _load(self, key: str):
        """The cache entry ``key``, or None when absent or damaged (then warned about and set aside)."""
        from .safeload import load_or_set_aside

        return load_or_set_aside(self._path(key), "cache entry",
                                 required=("params", "history", "diverged", "seconds", "device"))

    def _path(self, key: str) -> Path:
        return self.root / "members" / f"{key}.pt"
