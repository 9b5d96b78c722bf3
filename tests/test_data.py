"""graphnet.data: IDX files, dataset look-up and download, the DataLoader, real Fashion-MNIST."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pathlib
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphnet as gn
from graphnet.data import (
    MNIST, DataLoader, DatasetError, FashionMNIST, Normalize, find_root, pattern_images, read_idx, write_idx,
)
from graphnet.data import datasets as ds
from graphnet.data.idx import idx_bytes
from graphnet.data.loader import to_float

FASHION_SYSTEM = pathlib.Path("/usr/share/datasets/fashion-mnist")
DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def test_exports_and_error_hierarchy():
    for name in ("pattern_images", "read_idx", "write_idx", "MNIST", "FashionMNIST", "DataLoader", "Normalize",
                 "DatasetError", "find_root"):
        assert hasattr(gn.data, name), name
    assert issubclass(DatasetError, gn.GraphnetError)
    assert pattern_images(3)[0].shape == (3, 1, 28, 28)


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_idx_round_trip(tmp_path, compress, dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((5, 28, 28)) * 255).astype(dtype)
    path = tmp_path / "a.idx"  # no .gz suffix: compression is found by the magic bytes
    write_idx(path, a, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    raw = path.read_bytes() if not compress else gzip.decompress(path.read_bytes())
    assert raw[:4] == bytes([0, 0, 0x08 if dtype == "uint8" else 0x0D, 3])
    assert raw[4:16] == bytes([0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), compress=st.booleans())
def test_idx_round_trip_property(tmp_path_factory, data, compress):
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    a = data.draw(hnp.arrays(dtype, shape))
    path = tmp_path_factory.mktemp("idx") / "x"
    write_idx(path, a, gzip=compress)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape and b.dtype.isnative
    assert b.tobytes() == a.tobytes()  # bitwise: NaNs and -0.0 survive


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
BAD_FILES = {
    "empty": (b"", "truncated header"),
    "short magic": (b"\x00\x00\x08", "truncated header"),
    "short dims": (_header(0x08, [3, 4])[:9], "truncated header"),
    "wrong magic": (b"\x01\x00" + GOOD[2:], "bad magic"),
    "unknown dtype": (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown dtype code 0x0A"),
    "truncated payload": (GOOD[:-1], "size mismatch"),
    "trailing bytes": (GOOD + b"\x00\x00", "size mismatch: 2 trailing bytes"),
    "huge dims": (_header(0x0E, [2 ** 32 - 1] * 3) + b"\x00" * 8, "size mismatch"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_idx_rejects_bad_files(tmp_path, case, compress):
    content, message = BAD_FILES[case]
    if compress:
        content = gzip.compress(content, mtime=0)
        message = message.replace(": 2 trailing bytes", "")
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_huge_gzip_claim_is_rejected_before_allocating(tmp_path):
    # 2**40 bytes claimed by a tiny gzip file: must fail fast, not try to allocate a terabyte
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(_header(0x08, [2 ** 20, 2 ** 20]) + b"\x00" * 100))
    with pytest.raises(DatasetError, match="more than a .*gzip file can hold"):
        read_idx(path)


@pytest.mark.parametrize("how", ["flipped", "cut", "bad crc"])
def test_idx_corrupt_gzip(tmp_path, how):
    rng = np.random.default_rng(1)
    blob = bytearray(gzip.compress(idx_bytes(rng.integers(0, 255, (50, 28, 28), dtype=np.uint8)), mtime=0))
    if how == "flipped":
        blob[len(blob) // 2:len(blob) // 2 + 8] = b"\xff" * 8
    elif how == "cut":
        blob = blob[:len(blob) // 2]
    else:
        blob[-8] ^= 0xFF  # CRC32 in the trailer
    path = tmp_path / "c.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="gzip data is corrupt|size mismatch") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file_and_unwritable_dtype(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DatasetError, match="IDX holds only"):
        write_idx(tmp_path / "b", np.zeros(3, dtype=np.int64))


# --- small MNIST-like files ------------------------------------------------------------------


def _write_split(folder, split="test", n=20, gz=True, label_value=None, seed=0):
    """Write a small split (n images) into folder; return (images, labels)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10 if label_value is None else np.full(n, label_value)).astype(np.uint8)
    img_name, lab_name = ds.FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (img_name + suffix), images, gzip=gz)
    write_idx(folder / (lab_name + suffix), labels, gzip=gz)
    return images, labels


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in pathlib.Path(folder).glob("*.gz")}


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No GRAPHNET_DATA, no proxies, a private cache and empty system folders."""
    for var in ("GRAPHNET_DATA", "GRAPHNET_MNIST_MIRROR", "GRAPHNET_FASHION_MNIST_MIRROR", "http_proxy",
                "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    system = tmp_path / "system"
    monkeypatch.setattr(ds, "SYSTEM_DIRS", {"mnist": (str(system / "mnist"),),
                                            "fashion-mnist": (str(system / "fashion-mnist"),)})
    return {"cache": cache, "system": system, "tmp": tmp_path}


def test_lookup_order_env_beats_cache_beats_system(clean_env, monkeypatch):
    tmp, cache, system = clean_env["tmp"], clean_env["cache"], clean_env["system"]
    data = tmp / "data"
    _write_split(data / "mnist", label_value=1)
    _write_split(cache / "graphnet" / "mnist", label_value=2)
    _write_split(system / "mnist", label_value=3)
    monkeypatch.setenv("GRAPHNET_DATA", str(data))

    assert ds.search_dirs("mnist") == [data / "mnist", data, cache / "graphnet" / "mnist", system / "mnist"]
    assert find_root("mnist", "test") == data / "mnist"
    assert MNIST(split="test", download=False).labels[0] == 1
    for p in (data / "mnist").iterdir():
        p.unlink()
    assert find_root("mnist", "test") == cache / "graphnet" / "mnist"
    assert MNIST(split="test", download=False).labels[0] == 2
    for p in (cache / "graphnet" / "mnist").iterdir():
        p.unlink()
    assert find_root("mnist", "test") == system / "mnist"
    assert MNIST(split="test", download=False).labels[0] == 3
    assert find_root("mnist", "train") is None  # only the test split is anywhere
    assert find_root("fashion-mnist", "test") is None

    _write_split(data, label_value=4)  # files directly in $GRAPHNET_DATA
    assert find_root("mnist", "test") == data
    assert MNIST(split="test", download=False).labels[0] == 4


def test_find_root_with_explicit_dirs_and_env(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_split(b, split="train", gz=False)
    assert find_root("mnist", "train", dirs=[a, b]) == b
    assert find_root("mnist", dirs=[a, b]) is None  # both splits wanted
    _write_split(b, split="test")
    assert find_root("mnist", dirs=[a, b]) == b
    env = {"GRAPHNET_DATA": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    assert ds.search_dirs("fashion-mnist", env=env, system_dirs=[])[:3] == [
        tmp_path / "fashion-mnist", tmp_path, tmp_path / "c" / "graphnet" / "fashion-mnist"]
    with pytest.raises(DatasetError, match="unknown dataset"):
        find_root("cifar")
    with pytest.raises(DatasetError, match="unknown split"):
        find_root("mnist", "valid")


def test_dataset_object(tmp_path):
    images, labels = _write_split(tmp_path, split="train", n=30, gz=False)
    d = MNIST(tmp_path, split="train", download=False)
    assert len(d) == 30 and d.images.dtype == np.uint8 and d.images.shape == (30, 28, 28)
    assert d.labels.dtype == np.int64 and d.classes == tuple("0123456789")
    np.testing.assert_array_equal(d.images, images)
    np.testing.assert_array_equal(d.labels, labels)
    s = MNIST(tmp_path, split="train", download=False, scaled=True)
    assert s.images.dtype == np.float32 and 0 <= s.images.min() and s.images.max() <= 1
    for obj in (d, s):
        x = obj.as_float()
        assert x.shape == (30, 1, 28, 28) and x.dtype == np.float32
        np.testing.assert_allclose(x, (images[:, None] / 255.0 - MNIST.mean) / MNIST.std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(obj.as_float(normalize=False), images[:, None] / 255.0, rtol=1e-6)
    assert FashionMNIST.classes[0] == "T-shirt/top" and FashionMNIST.classes[9] == "Ankle boot"
    with pytest.raises(DatasetError, match="unknown split"):
        MNIST(tmp_path, split="val", download=False)


def test_dataset_checks_counts_and_label_range(tmp_path):
    _write_split(tmp_path, n=20)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8), gzip=True)
    with pytest.raises(DatasetError, match="20 images but .* 19 labels"):
        MNIST(tmp_path, split="test", download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8), gzip=True)
    with pytest.raises(DatasetError, match="labels must lie in 0..9"):
        MNIST(tmp_path, split="test", download=False)


def test_missing_without_download(clean_env):
    with pytest.raises(DatasetError) as info:
        FashionMNIST(split="train", download=False)
    msg = str(info.value)
    assert "missing" in msg and "train-images-idx3-ubyte" in msg
    assert str(clean_env["cache"] / "graphnet" / "fashion-mnist") in msg
    assert str(clean_env["system"] / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "GRAPHNET_DATA" in msg


# --- downloads from a local server -----------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (base URL, folder, stop)."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join()
            stopped.append(True)

    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, stop
    stop()


def _leftovers(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir()) if pathlib.Path(folder).exists() else []


def test_download_good_files(clean_env, server):
    url, served, stop = server
    images, labels = _write_split(served, split="test", n=20)
    d = MNIST(split="test", mirror=url, checksums=_md5s(served), progress=False)
    target = clean_env["cache"] / "graphnet" / "mnist"
    assert d.root == target
    assert _leftovers(target) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # no temp files
    np.testing.assert_array_equal(d.images, images)
    np.testing.assert_array_equal(d.labels, labels)
    stop()  # the cached copy is used from now on
    assert len(MNIST(split="test", download=False)) == 20


def test_download_mirror_from_env_with_fallback(clean_env, server, monkeypatch):
    url, served, _ = server
    _write_split(served / "real", split="train", n=20)
    # the first mirror answers 404, the second has the files
    monkeypatch.setenv("GRAPHNET_FASHION_MNIST_MIRROR", f"{url}nothing-here/, {url}real")
    d = FashionMNIST(split="train", checksums=_md5s(served / "real"), progress=True)
    assert len(d) == 20 and d.classes[1] == "Trouser"


def test_download_bad_checksum_leaves_nothing(clean_env, server):
    url, served, _ = server
    _write_split(served, split="test")
    sums = {**_md5s(served), "t10k-images-idx3-ubyte.gz": "0" * 32}
    with pytest.raises(DatasetError) as info:
        MNIST(split="test", mirror=url, checksums=sums, progress=False)
    msg = str(info.value)
    got = hashlib.md5((served / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert "checksum mismatch" in msg and "t10k-images-idx3-ubyte.gz" in msg and "0" * 32 in msg and got in msg
    assert _leftovers(clean_env["cache"] / "graphnet" / "mnist") == []


def test_download_default_checksums_reject_other_files(clean_env, server):
    url, served, _ = server
    _write_split(served, split="test")
    with pytest.raises(DatasetError, match="expected bef4ecab320f06d8554ea6380940ec79"):
        FashionMNIST(split="test", mirror=url, progress=False)


def test_download_server_gone(clean_env, server):
    url, served, stop = server
    _write_split(served, split="test")
    stop()
    with pytest.raises(DatasetError) as info:
        FashionMNIST(split="test", mirror=url, checksums=_md5s(served), progress=False, timeout=5)
    msg = str(info.value)
    assert "missing" in msg and f"{url}t10k-images-idx3-ubyte.gz" in msg and "refused" in msg.lower()
    assert str(clean_env["cache"] / "graphnet" / "fashion-mnist") in msg
    assert str(clean_env["system"] / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "GRAPHNET_DATA" in msg
    assert _leftovers(clean_env["cache"] / "graphnet" / "fashion-mnist") == []


def test_download_timeout(clean_env):
    import socket

    with socket.socket() as sock:  # listens, never answers: the request must time out
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(DatasetError, match="(?s)missing.*timed out"):
            MNIST(split="train", mirror=url, progress=False, timeout=0.3)


def test_download_http_error(clean_env, server):
    url, _, _ = server
    with pytest.raises(DatasetError, match="HTTP Error 404"):
        MNIST(split="test", mirror=url, progress=False)


def test_download_truncated_file_with_matching_checksum(clean_env, server):
    url, served, _ = server
    _write_split(served, split="test")
    img = served / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    img.write_bytes(gzip.compress(raw[:-100], mtime=0))
    with pytest.raises(DatasetError, match="size mismatch: truncated payload") as info:
        MNIST(split="test", mirror=url, checksums=_md5s(served), progress=False)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_download_into_explicit_root(tmp_path, server, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url, served, _ = server
    _write_split(served, split="train", n=20)
    root = tmp_path / "mine"
    d = MNIST(root, split="train", mirror=url, checksums=_md5s(served), progress=False)
    assert d.root == root and len(d) == 20


# --- DataLoader ------------------------------------------------------------------------------


def _xy(n=103):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2)
    return x, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("prefetch", [False, True])
def test_loader_visits_every_sample_once(prefetch):
    x, y = _xy()
    loader = DataLoader(x, y, batch_size=10, shuffle=True, seed=3, prefetch=prefetch)
    assert len(loader) == 11
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 11 and [len(b[1]) for b in batches] == [10] * 10 + [3]
        seen = np.concatenate([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(103))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])


def test_loader_order_seeded_and_per_epoch():
    x, y = _xy()
    epochs = lambda loader: [np.concatenate([b for _, b in loader]) for _ in range(3)]  # noqa: E731
    a = epochs(DataLoader(x, y, 16, shuffle=True, seed=7))
    b = epochs(DataLoader(x, y, 16, shuffle=True, seed=7))
    c = epochs(DataLoader(x, y, 16, shuffle=True, seed=8))
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c[0])
    plain = np.concatenate([b for _, b in DataLoader(x, y, 16)])
    np.testing.assert_array_equal(plain, y)


def test_loader_drop_last_and_len():
    x, y = _xy(103)
    assert len(DataLoader(x, y, 10, drop_last=True)) == 10
    assert len(DataLoader(x, y, 103)) == 1 and len(DataLoader(x, y, 200)) == 1
    assert len(DataLoader(x, y, 200, drop_last=True)) == 0 and list(DataLoader(x, y, 200, drop_last=True)) == []
    batches = list(DataLoader(x, y, 10, shuffle=True, seed=0, drop_last=True))
    assert len(batches) == 10 and all(len(b) == 10 for _, b in batches)
    assert len(set(np.concatenate([b for _, b in batches]).tolist())) == 100
    with pytest.raises(DatasetError, match="batch_size"):
        DataLoader(x, y, 0)
    with pytest.raises(DatasetError, match="labels"):
        DataLoader(x, y[:-1])


def test_loader_prefetch_matches_plain_with_transform():
    x, y = _xy()
    norm = Normalize(10.0, 4.0)
    kw = dict(batch_size=8, shuffle=True, seed=11, transform=norm)
    for (xa, ya), (xb, yb) in zip(DataLoader(x, y, prefetch=False, **kw), DataLoader(x, y, prefetch=True, **kw),
                                  strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_allclose(xa, (x[ya] - 10.0) / 4.0)
        assert xa.dtype == np.float32


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "graphnet-data-prefetch" and t.is_alive()]


def test_loader_prefetch_early_break_does_not_hang():
    x, y = _xy(1000)
    loader = DataLoader(x, y, batch_size=4, prefetch=True)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    it = iter(loader)
    next(it)
    it.close()
    assert _prefetch_threads() == []


@pytest.mark.parametrize("prefetch", [False, True])
def test_loader_transform_exception_propagates(prefetch):
    x, y = _xy(50)
    calls = []

    def transform(batch):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("boom in transform")
        return batch

    got = []
    with pytest.raises(ValueError, match="boom in transform"):
        for xb, _ in DataLoader(x, y, batch_size=5, prefetch=prefetch, transform=transform):
            got.append(xb)
    assert len(got) == 2
    assert _prefetch_threads() == []


def test_normalize_and_to_float():
    u8 = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    f = to_float(u8)
    assert f.shape == (2, 1, 28, 28) and f.dtype == np.float32 and f.max() <= 1.0
    np.testing.assert_allclose(f[:, 0], u8 / 255.0, rtol=1e-6)
    per_channel = Normalize([0.5, 0.25], [2.0, 0.5])(np.ones((3, 2, 4, 4), np.float32))
    np.testing.assert_allclose(per_channel[:, 0], 0.25)
    np.testing.assert_allclose(per_channel[:, 1], 1.5)
    with pytest.raises(DatasetError, match="std"):
        Normalize(0.0, 0.0)


# --- the real Fashion-MNIST (Debian's dataset-fashion-mnist) ---------------------------------


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="Debian package dataset-fashion-mnist is not installed "
                    f"({FASHION_SYSTEM} is missing)")
def test_real_fashion_mnist_test_split(monkeypatch):
    monkeypatch.delenv("GRAPHNET_DATA", raising=False)
    d = FashionMNIST(FASHION_SYSTEM, split="test", download=False)
    assert len(d) == 10000 and d.images.shape == (10000, 28, 28) and d.images.dtype == np.uint8
    assert d.labels.min() == 0 and d.labels.max() == 9
    assert np.bincount(d.labels, minlength=10).tolist() == [1000] * 10
    x = d.as_float()
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    xb, yb = next(iter(DataLoader(d.images, d.labels, 256, shuffle=True, seed=0, transform=to_float)))
    assert xb.shape == (256, 1, 28, 28) and yb.shape == (256,)


def test_loader_takes_any_tuple_or_a_dict_of_equally_long_arrays():
    rng = np.random.default_rng(0)
    x, y, w = rng.standard_normal((10, 3)), np.arange(10), rng.random(10)
    triples = list(DataLoader(x, y, w, batch_size=4, shuffle=True, seed=1))
    assert [len(t) for t in triples] == [3, 3, 3] and [len(t[0]) for t in triples] == [4, 4, 2]
    order = np.concatenate([t[1] for t in triples])
    assert sorted(order.tolist()) == list(range(10))
    for xb, yb, wb in triples:  # rows stay together
        assert np.array_equal(xb, x[yb]) and np.array_equal(wb, w[yb])
    singles = list(DataLoader(x, batch_size=5))
    assert all(isinstance(b, tuple) and len(b) == 1 for b in singles)  # unlabelled, as TensorDataset
    dicts = list(DataLoader({"x": x, "labels": y}, batch_size=6, transform=lambda d: {**d, "x": d["x"] * 2}))
    assert [sorted(d) for d in dicts] == [["labels", "x"]] * 2 and np.array_equal(dicts[0]["x"], 2 * x[:6])
    assert len(list(DataLoader((x, y), 5))) == 2  # one tuple, and a positional batch size
    with pytest.raises(DatasetError, match="x has 10, labels has 9"):
        DataLoader({"x": x, "labels": y[:-1]})
    with pytest.raises(DatasetError, match="give the arrays"):
        DataLoader()


def test_fit_trains_from_a_dict_loader():
    import graphnet as gn

    gn.manual_seed(0)
    rng = np.random.default_rng(0)
    points = rng.standard_normal((64, 2)).astype(np.float32)
    classes = (points[:, 0] > 0).astype(np.int64)
    x = gn.placeholder("x", (None, 2))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    logits = gn.nn.Linear(2, 2)(x)
    train = gn.compile({"loss": gn.losses.cross_entropy(logits, labels), "logits": logits},
                       optimizer=gn.optim.SGD(lr=0.5))
    history = gn.train.fit(train, DataLoader({"labels": classes, "x": points}, batch_size=16), epochs=5,
                           progress=False, log=None)
    assert history.train_loss[-1] < history.train_loss[0]
