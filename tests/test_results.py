import json

import pytest
import numpy as np
import torch

import nrc
from conftest import mixture
import nrc.cache
import nrc_companion


def _setup():
    data = mixture(dim=5, per_class=10)
    arch = nrc.Architecture((5, 8, 3))
    return data, arch, nrc.TrainConfig(epochs=2, batch_size=10)


def test_cache_loads_repeated_runs_and_trains_only_new_members(tmp_path, monkeypatch):
    data, arch, config = _setup()
    store = nrc.ResultStore(tmp_path)
    calls = []
    real_train = nrc.cache.train

    def counting_train(arch, data, members, *a, **k):
        calls.append(len(members))
        return real_train(arch, data, members, *a, **k)

    monkeypatch.setattr(nrc.cache, "train", counting_train)
    first = store.train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2], seed=0), config, progress=False)
    again = store.train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2], seed=0), config, progress=False)
    assert calls == [2]  # the repeat loaded from disk
    for k in first.params:
        assert torch.equal(first.params[k], again.params[k])
    store.train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2, 1e-1], seed=0), config, progress=False)
    assert calls == [2, 1]  # only the new member trained
    store.train(arch, data, nrc.grid(weight_decay=[1e-3], seed=0), nrc.TrainConfig(epochs=3, batch_size=10),
                progress=False)
    assert calls == [2, 1, 1]  # a config change recomputes
    other = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=10, spread=0.9, seed=0)
    store.train(arch, other, nrc.grid(weight_decay=[1e-3], seed=0), config, progress=False)
    assert calls == [2, 1, 1, 1]  # a data change recomputes
    assert store.cached(arch, config, data, nrc.grid(weight_decay=[1e-3, 5e-3], seed=0)) == [True, False]


def test_cached_member_carries_provenance(tmp_path):
    data, arch, config = _setup()
    store = nrc.ResultStore(tmp_path)
    store.train(arch, data, [{"weight_decay": 1e-3}], config, progress=False)
    (entry,) = list((tmp_path / "members").glob("*.pt"))
    meta = torch.load(entry, weights_only=False)["meta"]
    assert {"device", "python", "versions", "commit", "time"} <= set(meta)
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"].startswith(
        torch.__version__.split("+")[0])
    assert not list(tmp_path.glob("**/*.tmp"))


def test_record_and_save_table(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("NRC_PROFILE", "smoke")
    from nrc_companion import verdicts

    inputs = {"t6.a3": {"values": [np.float64(0.5)]}, "t6.chain": {"values": [0.2]}}
    checks = verdicts.evaluate("t6_tcv_propagation", inputs)
    path = nrc_companion.record("demo", {"x": torch.tensor(1.5), "n": 3}, checks, inputs=inputs, glue=False)
    rec = json.loads(path.read_text())
    assert rec["values"] == {"x": 1.5, "n": 3}
    assert rec["profile"] == "smoke" and [c["verdict"] for c in rec["checks"]] == ["pass", "pass"]
    assert rec["inputs"]["t6.a3"] == {"values": [0.5]}  # numpy scalars stored as plain numbers
    assert verdicts.evaluate("t6_tcv_propagation", rec["inputs"]) == rec["checks"]  # re-evaluable
    assert "commit" in rec["meta"]
    import pandas as pd

    csv = nrc_companion.save_table(pd.DataFrame({"a": [1, 2]}), "demo", "table")
    assert csv == tmp_path / "demo" / "table.csv" and csv.read_text().startswith("a\n1")


@pytest.mark.parametrize("module", ["torch", "numpy"])
def test_member_key_changes_with_library_versions(tmp_path, monkeypatch, module):
    """A torch or numpy upgrade must not reuse results trained with the old version."""
    import numpy as np

    data, arch, config = _setup()
    store = nrc.ResultStore(tmp_path)
    member = {"weight_decay": 1e-3, "seed": 0, "lr": config.lr}
    key = store.member_key(arch, config, data, member)
    assert key == store.member_key(arch, config, data, dict(member))  # deterministic
    lib = torch if module == "torch" else np
    monkeypatch.setattr(lib, "__version__", lib.__version__ + ".post999")
    assert store.member_key(arch, config, data, member) != key
    monkeypatch.undo()
    assert store.member_key(arch, config, data, member) == key


def test_member_keys_hash_each_data_set_once_and_match_member_key(tmp_path, monkeypatch):
    """``member_keys`` gives every member the key that ``member_key`` gives it alone (the key of
    a cache entry written before it existed: sha256 of the sorted JSON of arch, config, data hash,
    member, trainer and library versions), and hashes each distinct data set once."""
    import hashlib
    import json

    import numpy as np

    from nrc import cache

    data, arch, config = _setup()
    other = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=16, spread=0.5, seed=1)
    store = nrc.ResultStore(tmp_path)
    members = [{"weight_decay": 1e-3 * (i + 1), "seed": i, "lr": config.lr} for i in range(4)]
    # the bytes that sha256 is given: each data set's training tensors once, not once per member
    hashed, sha256 = [], hashlib.sha256

    class Counting:
        def __init__(self, *a):
            self.h = sha256(*a)

        def update(self, b):
            hashed.append(len(b))
            self.h.update(b)

        def hexdigest(self):
            return self.h.hexdigest()

    with monkeypatch.context() as m:
        m.setattr(hashlib, "sha256", Counting)
        keys = store.member_keys(arch, config, [data, other, data, other], members)
    x_bytes = {data.x_train.numpy().nbytes, other.x_train.numpy().nbytes}
    assert sum(1 for n in hashed if n in x_bytes) == 2
    assert store.member_keys(arch, config, data, members[:2]) == [store.member_key(arch, config, data, m)
                                                                   for m in members[:2]]
    assert keys == [store.member_key(arch, config, d, m) for d, m in zip([data, other, data, other], members)]
    assert len(set(keys)) == 4

    def by_hand(d, m):
        h = hashlib.sha256()
        for t in (d.x_train, d.y_train):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        h.update(json.dumps({"name": d.name, "classes": d.num_classes}, sort_keys=True, separators=(",", ":")).encode())
        obj = {"arch": arch.to_dict(), "config": config.to_dict(), "data": h.hexdigest()[:20], "member": m,
               "trainer": cache.TRAINER_VERSION, "torch": torch.__version__, "numpy": np.__version__}
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()[:20]

    assert keys[1] == by_hand(other, members[1])
    with pytest.raises(ValueError, match="got 3 data sets for 4 members"):
        store.member_keys(arch, config, [data] * 3, members)


def test_train_takes_its_executor_from_the_environment(tmp_path, monkeypatch):
    """Notebooks reach the executor through $NRC_EXECUTOR (set by `nrc reproduce --executor`)."""
    from nrc.executors import ExecutorError

    data, arch, config = _setup()
    store = nrc.ResultStore(tmp_path)
    monkeypatch.setenv("NRC_EXECUTOR", "dask")
    with pytest.raises(ExecutorError, match=r"^\$NRC_EXECUTOR='dask': executor option 'kind' must be one of "
                                            r"local, ray, slurm, got 'dask'$"):
        store.train(arch, data, [{"weight_decay": 1e-3}], config, progress=False)
    assert not (tmp_path / "members").exists()  # nothing trained on a bad executor
    monkeypatch.setenv("NRC_EXECUTOR", '{"kind": "local"}')
    store.train(arch, data, [{"weight_decay": 1e-3}], config, progress=False)
    assert store.cached(arch, config, data, [{"weight_decay": 1e-3}]) == [True]


def test_a_member_locked_by_a_live_process_is_waited_for_then_loaded(tmp_path, monkeypatch):
    """A member another process is training (its lock held) is not trained twice: train waits for
    the lock and loads the entry the holder wrote."""
    import threading

    from nrc.cache import MemberLocks

    data, arch, config = _setup()
    member = [{"weight_decay": 1e-3, "seed": 0}]
    store = nrc.ResultStore(tmp_path)
    key = store.member_key(arch, config, data, {"weight_decay": 1e-3, "seed": 0, "lr": config.lr})
    trained = nrc.train(arch, data, member, config, progress=False)
    locks = MemberLocks(tmp_path / "locks", [key])
    assert locks.__enter__() == [key]  # "the other process" holds the member's lock

    def finish():  # the holder writes the entry, then releases the lock
        from nrc.cache import member_entry

        store.write(key, member_entry(trained, 0, member[0], {}))
        locks.__exit__(None, None, None)

    calls = []
    monkeypatch.setattr(nrc.cache, "train", lambda *a, **k: calls.append(1))
    timer = threading.Timer(0.5, finish)
    timer.start()
    sweep = store.train(arch, data, member, config, progress=False, executor="local")
    timer.join()
    assert calls == []  # waited and loaded, never trained
    assert all(torch.equal(sweep.params[k], trained.params[k]) for k in trained.params)
