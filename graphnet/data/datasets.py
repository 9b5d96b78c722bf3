"""MNIST and Fashion-MNIST: find the files, download them when missing, load them.

Look-up order for a dataset called ``name`` ("mnist" or "fashion-mnist") when no root is
given (see ``search_dirs``):

1. ``$GRAPHNET_DATA/<name>``, then ``$GRAPHNET_DATA`` itself (files placed directly);
2. the user cache folder, ``($XDG_CACHE_HOME or ~/.cache)/graphnet/<name>``;
3. the system folder where Debian puts it (``/usr/share/datasets/fashion-mnist`` from the
   package ``dataset-fashion-mnist``; ``/usr/share/datasets/mnist`` for MNIST).

Each split needs its images and labels files, gzipped or plain. When they are nowhere and
``download=True``, they are fetched into the cache folder from the mirrors in ``MIRRORS``
(or the base URL given by the ``mirror`` argument or ``$GRAPHNET_MNIST_MIRROR`` /
``$GRAPHNET_FASHION_MNIST_MIRROR``), checked against the MD5 sums in ``MD5`` and renamed
into place atomically. Files found on disk are not checksummed (Debian recompresses them);
they only have to parse.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .errors import DatasetError
from .idx import read_idx

#: Default mirror base URLs, tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

#: MD5 sums of the original gzipped files.
MD5: dict[str, dict[str, str]] = {
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
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83fd310",
    },
}

#: Environment variables that override the mirror base URL (a comma-separated list is allowed).
MIRROR_ENV: dict[str, str] = {"mnist": "GRAPHNET_MNIST_MIRROR", "fashion-mnist": "GRAPHNET_FASHION_MNIST_MIRROR"}

#: System folders searched last.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

#: Debian packages that install a dataset: name -> (package, the folder it installs the files into).
DEBIAN_PACKAGES: dict[str, tuple[str, str]] = {
    "fashion-mnist": ("dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"),
}

#: Split -> (images file, labels file), without the optional ".gz".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DATA_ENV = "GRAPHNET_DATA"
_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_CHUNK = 1 << 16


def _check_name(name: str) -> str:
    if name not in MD5:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(MD5))}")
    return name


def _splits(split: str | None) -> list[str]:
    if split is None:
        return list(FILES)
    if split not in FILES:
        raise DatasetError(f"unknown split {split!r}; use 'train' or 'test'")
    return [split]


def cache_dir(name: str, env: Mapping[str, str] | None = None) -> Path:
    """The user cache folder of a dataset: ``($XDG_CACHE_HOME or ~/.cache)/graphnet/<name>``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphnet" / _check_name(name)


def search_dirs(name: str, env: Mapping[str, str] | None = None,
                system_dirs: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring).

    ``env`` replaces ``os.environ`` and ``system_dirs`` replaces ``SYSTEM_DIRS[name]``.
    """
    _check_name(name)
    env = os.environ if env is None else env
    dirs: list[Path] = []
    if env.get(DATA_ENV):
        data = Path(env[DATA_ENV]).expanduser()
        dirs += [data / name, data]
    dirs.append(cache_dir(name, env))
    dirs += [Path(d) for d in (SYSTEM_DIRS[name] if system_dirs is None else system_dirs)]
    return dirs


def _locate(folder: Path, base: str) -> Path | None:
    """``folder/base`` or ``folder/base.gz``, whichever exists (plain first), else None."""
    for candidate in (folder / base, folder / (base + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _has_split(folder: Path, split: str) -> bool:
    return all(_locate(folder, base) is not None for base in FILES[split])


def find_root(name: str, split: str | None = None, *, dirs: Iterable[str | os.PathLike] | None = None,
              env: Mapping[str, str] | None = None) -> Path | None:
    """The first folder holding the files of ``split`` (both splits when None) of dataset ``name``.

    Searches ``dirs`` when given, else ``search_dirs(name, env)``. Returns None when no
    folder has them.
    """
    _check_name(name)
    splits = _splits(split)
    for folder in (search_dirs(name, env) if dirs is None else [Path(d) for d in dirs]):
        if all(_has_split(folder, s) for s in splits):
            return folder
    return None


def _mirrors(name: str, mirror: str | Sequence[str] | None, env: Mapping[str, str]) -> list[str]:
    if mirror is None:
        mirror = env.get(MIRROR_ENV[name]) or MIRRORS[name]
    if isinstance(mirror, str):
        mirror = [m.strip() for m in mirror.split(",") if m.strip()]
    return [m.rstrip("/") + "/" for m in mirror]


def _fetch(url: str, dest: Path, expected_md5: str, *, timeout: float, progress: bool) -> str | None:
    """Stream ``url`` to a temp file beside ``dest``, check its MD5, rename it into place.

    Returns None on success or the MD5 actually received on a mismatch (the temp file is
    removed either way). Network errors propagate.
    """
    import urllib.request  # (here, not at import: most runs read local files and never download)

    from tqdm.auto import tqdm

    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        md5 = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest.name, disable=not progress, leave=False) as bar:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
        got = md5.hexdigest()
        if got != expected_md5:
            return got
        os.replace(tmp, dest)
        tmp = None
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _missing_message(name: str, splits: list[str], looked: list[Path], env: Mapping[str, str],
                     failures: list[str]) -> str:
    title = _TITLES[name]
    files = ", ".join(f"{base}(.gz)" for s in splits for base in FILES[s])
    lines = [f"{title} {'/'.join(splits)} files are missing ({files})."]
    lines.append("Looked in: " + ", ".join(str(p) for p in looked)
                 + ("" if env.get(DATA_ENV) or cache_dir(name, env) not in looked else f" (${DATA_ENV} is not set)"))
    if failures:
        lines.append("Download failed: " + "; ".join(failures))
    how = []
    if name in DEBIAN_PACKAGES:
        package, folder = DEBIAN_PACKAGES[name]
        how.append(f"`apt-get install {package}` (installs them into {folder})")
    how.append(f"put the files in a folder and set ${DATA_ENV} to it (or to a folder holding "
               f"{' and '.join(f'{n}/' for n in MD5)})")
    how.append(f"set ${MIRROR_ENV[name]} to the base URL of a reachable mirror")
    lines.append("To get them: " + ", or ".join(how) + ".")
    return "\n".join(lines)


def download(name: str, folder: str | os.PathLike | None = None, split: str | None = None, *,
             mirror: str | Sequence[str] | None = None, checksums: Mapping[str, str] | None = None,
             progress: bool | None = None, timeout: float = 30.0,
             env: Mapping[str, str] | None = None, looked: Sequence[Path] | None = None) -> Path:
    """Download the missing gzipped files of ``split`` (both when None) into ``folder``.

    ``folder`` defaults to the cache folder. ``mirror`` (a base URL or a list of them)
    overrides ``$GRAPHNET_*_MIRROR`` which overrides ``MIRRORS[name]``; ``checksums``
    (file name -> MD5) overrides entries of ``MD5[name]``. ``progress`` None shows a bar only
    on a terminal. Returns the folder. Raises ``DatasetError`` on a checksum mismatch
    (naming the file, the expected and the received sum) or when no mirror could deliver
    a file (naming the URLs that failed, where it looked and how to get the files).
    """
    _check_name(name)
    env = os.environ if env is None else env
    splits = _splits(split)
    target = Path(folder) if folder is not None else cache_dir(name, env)
    looked = list(looked) if looked is not None else ([target] if folder is not None else search_dirs(name, env))
    table = {**MD5[name], **(checksums or {})}
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create the download folder {str(target)!r}: {e}\n"
                           + _missing_message(name, splits, looked, env, [])) from e
    import http.client
    import urllib.error

    bases = _mirrors(name, mirror, env)
    for s in splits:
        for base in FILES[s]:
            if _locate(target, base) is not None:
                continue
            filename = base + ".gz"
            if filename not in table:
                raise DatasetError(f"no MD5 checksum known for {filename!r}; pass one in `checksums`")
            failures: list[str] = []
            mismatches: list[str] = []
            for mirror_base in bases:
                url = mirror_base + filename
                try:
                    got = _fetch(url, target / filename, table[filename], timeout=timeout, progress=progress)
                except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                    reason = getattr(e, "reason", None) if not isinstance(e, urllib.error.HTTPError) else None
                    failures.append(f"{url}: {reason or e}")
                    continue
                if got is None:
                    break
                mismatches.append(f"{url}: expected {table[filename]}, got {got}")
            else:
                if mismatches:
                    raise DatasetError(f"checksum mismatch for downloaded file {filename!r} (MD5): "
                                       + "; ".join(mismatches)
                                       + ("; other mirrors failed: " + "; ".join(failures) if failures else "")
                                       + ". The download was discarded.")
                raise DatasetError(_missing_message(name, splits, looked, env, failures))
    return target


_download = download  # the datasets' ``download`` argument shadows the function


class _IDXDataset:
    """A split of an MNIST-like dataset held in memory. See ``MNIST`` and ``FashionMNIST``."""

    name: str = ""
    classes: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    image_shape = (28, 28)

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", download: bool = True,
                 scaled: bool = False, *, mirror: str | Sequence[str] | None = None,
                 checksums: Mapping[str, str] | None = None, progress: bool | None = None,
                 timeout: float = 30.0) -> None:
        self.split = _splits(split)[0]
        env = os.environ
        looked = [Path(root)] if root is not None else search_dirs(self.name, env)
        folder = find_root(self.name, self.split, dirs=looked)
        if folder is None:
            if not download:
                raise DatasetError(_missing_message(self.name, [self.split], looked, env, [])
                                   + "\n(download=False, so nothing was downloaded.)")
            folder = _download(self.name, root, self.split, mirror=mirror, checksums=checksums,
                               progress=progress, timeout=timeout, env=env, looked=looked)
        self.root = folder
        images_path, labels_path = (_locate(folder, base) for base in FILES[self.split])
        assert images_path is not None and labels_path is not None
        self.files = (images_path, labels_path)
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != self.image_shape:
            raise DatasetError(f"{images_path}: expected uint8 images of shape (N, {self.image_shape[0]}, "
                               f"{self.image_shape[1]}), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DatasetError(f"{labels_path}: expected a 1-D integer array of labels, got {labels.dtype} "
                               f"{labels.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                               f"{len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DatasetError(f"{labels_path}: labels must lie in 0..{len(self.classes) - 1}, found "
                               f"{labels.min()}..{labels.max()}")
        self.labels = labels.astype(np.int64)
        self.images = (images.astype(np.float32) / np.float32(255.0)) if scaled else images
        self.scaled = scaled

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, root={str(self.root)!r})"

    def as_float(self, normalize: bool = True) -> np.ndarray:
        """Images as (N, 1, 28, 28) float32 in [0, 1], standardised by ``mean``/``std`` if ``normalize``."""
        x = self.images if self.scaled else self.images.astype(np.float32) / np.float32(255.0)
        x = x.reshape(len(x), 1, *x.shape[1:])
        if normalize:
            x = (x - np.float32(self.mean)) / np.float32(self.std)
        return x.astype(np.float32, copy=False)


class MNIST(_IDXDataset):
    """MNIST handwritten digits: ``.images`` (N, 28, 28) uint8 (float32 in [0, 1] if ``scaled``),
    ``.labels`` (N,) int64, ``.classes`` "0".."9". 60000 train and 10000 test images."""

    name = "mnist"
    classes = tuple(str(d) for d in range(10))
    mean = 0.1307
    std = 0.3081


class FashionMNIST(_IDXDataset):
    """Fashion-MNIST (Zalando article images), laid out like ``MNIST``; 10 clothing classes."""

    name = "fashion-mnist"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    mean = 0.2860
    std = 0.3530
