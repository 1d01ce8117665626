"""Where the real data sets live and how missing files are fetched: the data root, mirrors, md5 checks.

Nothing touches the network unless a loader is called with ``download=True``. Files come from the
official locations in ``MIRRORS`` or, when ``$NRC_DATA_MIRROR`` (or a loader's ``mirrors=``)
names one, from a server laid out like a data root. Every file is checked against ``CHECKSUMS``
(the md5 sums torchvision checks) and lands atomically; a machine that is offline gets one
error naming every URL tried and what to set instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from .formats import CIFAR10_TARBALL, corrupt, extract_cifar10

__all__ = ["CHECKSUMS", "MIRRORS", "MIRROR_ENV_VAR", "TIMEOUT_S", "data_root", "download_cifar10",
           "download_file", "missing_files_error", "source_urls"]

_ENV_VAR = "NRC_DATA"

#: Environment variable naming download mirrors (whitespace- or comma-separated base URLs) laid
#: out like a data root (``<url>/MNIST/raw/<file>``, ``<url>/cifar-10-python.tar.gz``). When set,
#: only these are tried, never the official ``MIRRORS``.
MIRROR_ENV_VAR = "NRC_DATA_MIRROR"

#: Official download locations per dataset, tried in order: base URLs to which the published
#: file name is appended (the ones torchvision uses).
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

#: md5 of each published file, per dataset (the checksums torchvision verifies). Only fresh
#: downloads are checked, never files already on disk: Debian's Fashion-MNIST package recompresses
#: the files, so its ``.gz`` differ from the published ones.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {CIFAR10_TARBALL: "c58f30108f718f92721af3b95e74349a"},
}

# Tries per URL: a connection that drops mid-file is retried once before the next URL.
_ATTEMPTS = 2
#: Seconds a download waits for the server per try (the test suite lowers it to probe quickly).
TIMEOUT_S = 60
_DEFAULT_ROOT = Path("~/.cache/nrc/data")


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data root: ``root`` if given, else ``$NRC_DATA``, else ``~/.cache/nrc/data``.

    A relative path is resolved against the current working directory at the time of the call,
    so the result is always absolute. The directory is not created; loaders create it only when
    they download.
    """
    if root is not None:
        path = Path(root)
    elif os.environ.get(_ENV_VAR):
        path = Path(os.environ[_ENV_VAR])
    else:
        path = _DEFAULT_ROOT
    return path.expanduser().absolute()

def _mirror_roots(mirrors: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Override mirrors (data-root URLs): ``mirrors`` if given, else ``$NRC_DATA_MIRROR``."""
    if mirrors is None:
        mirrors = os.environ.get(MIRROR_ENV_VAR) or None
    if mirrors is None:
        return None
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    roots = [str(m).rstrip("/") for m in mirrors if str(m).strip()]
    if not roots:
        raise ValueError(f"mirrors must name at least one URL, got {mirrors!r}")
    return roots


def source_urls(dataset: str, layout_path: str, mirrors: Any) -> tuple[str, ...]:
    """Where to fetch the file at ``layout_path`` (relative to a data root) of ``dataset``."""
    roots = _mirror_roots(mirrors)
    if roots is not None:
        return tuple(f"{r}/{layout_path}" for r in roots)
    name = layout_path.rsplit("/", 1)[-1]
    return tuple(base + name for base in MIRRORS[dataset])


class _Retry(Exception):
    """A transfer failed in a way worth one more try (dropped connection, short body)."""


def _fetch(url: str, out: BinaryIO, digest: Any) -> int:
    """Stream ``url`` into ``out``; returns the byte count, raises ``_Retry`` when cut short."""
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
    except urllib.error.HTTPError:
        raise  # the server answered (404, 403...): another try would get the same answer
    except (OSError, http.client.HTTPException) as exc:
        # URLError, resets and timeouts are OSErrors; IncompleteRead is an HTTPException.
        raise _Retry(f"{type(exc).__name__}: {exc} after {received} bytes") from exc
    if expected is not None and received != int(expected):
        raise _Retry(f"connection closed after {received} of {expected} bytes")
    return received


def download_file(urls: tuple[str, ...], target: Path, md5: str | None) -> None:
    """Fetch the first working URL into ``target`` atomically, verifying ``md5`` when known.

    Bytes go to a temporary file in the target directory that replaces ``target`` only once
    complete and verified, so an interrupted or corrupt download never leaves a partial file.
    A transfer cut short is retried once (``_ATTEMPTS``) before the next URL is tried; a wrong
    checksum or an HTTP error moves on to the next URL at once. When every URL fails, the folders
    this call created for ``target`` are removed again (those still empty).
    """
    created = _missing_dirs(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download_into(urls, target, md5)
    except BaseException:
        # A failed download (offline, Ctrl-C) leaves no empty folders behind: a later look at
        # the data root must not find FashionMNIST/raw/ and think the data set is half there.
        for folder in created:
            try:
                folder.rmdir()  # only if empty; deepest first
            except OSError:
                break
        raise


def _missing_dirs(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``folder``, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _download_into(urls: tuple[str, ...], target: Path, md5: str | None) -> None:
    """The body of :func:`download_file` once ``target.parent`` exists."""
    errors = []
    for url in urls:
        for attempt in range(1, _ATTEMPTS + 1):
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            tmp = Path(tmp_name)
            try:
                digest = hashlib.md5(usedforsecurity=False)
                with os.fdopen(fd, "wb") as out:
                    _fetch(url, out, digest)
                if md5 is not None and digest.hexdigest() != md5:
                    errors.append(
                        f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}"
                    )
                    break
                os.replace(tmp, target)
                return
            except _Retry as exc:
                errors.append(f"{url} (try {attempt} of {_ATTEMPTS}): {exc}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                break
            finally:
                tmp.unlink(missing_ok=True)
    raise RuntimeError(
        f"could not download {target.name} into {target.parent}:\n  "
        + "\n  ".join(errors)
        + f"\nFix: set ${_ENV_VAR} (or root=) to a data root that already holds the file, or set "
        f"${MIRROR_ENV_VAR} to a reachable server laid out like a data root."
    )


def missing_files_error(
    title: str, names: list[str], searched: list[Path], layout: str, note: str
) -> FileNotFoundError:
    """The error for files not found offline: what was expected, where it looked, what to set."""
    lines = [f"{title} files not found. Expected {', '.join(names)} {note}".rstrip()]
    for directory in searched:
        lines.append(f"  searched {directory}")
    lines.append(
        f"Fix: set ${_ENV_VAR} (or root=) to a data root holding {layout}/, or fetch the "
        f"files: download=True in Python, `--download` with `nrc sweep` (from the official "
        f"mirrors, or from ${MIRROR_ENV_VAR} when set)."
    )
    return FileNotFoundError("\n".join(lines))


def download_cifar10(root: Path, batch_dir: Path, mirrors: Any) -> None:
    """Fetch ``cifar-10-python.tar.gz`` into ``root`` (unless there) and extract the batches into ``batch_dir``."""
    tarball = root / CIFAR10_TARBALL
    if not tarball.is_file():
        urls = source_urls("cifar10", CIFAR10_TARBALL, mirrors)
        download_file(urls, tarball, CHECKSUMS["cifar10"][CIFAR10_TARBALL])
    batch_dir.mkdir(parents=True, exist_ok=True)
    try:
        extract_cifar10(tarball, batch_dir)
    except (tarfile.TarError, EOFError, zlib.error, KeyError) as exc:
        raise corrupt(tarball, f"{type(exc).__name__}: {exc}") from exc
