"""numpy's BLAS product called from numba (graphnet/executors/blas.py) against numpy's matmul."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet.backends.numpy import fused_kernels

pytestmark = pytest.mark.skipif(not fused_kernels.numba_available(), reason="numba is not installed")


@pytest.fixture(scope="module")
def product():
    import numba

    from graphnet.kernels.cpu.blas import gemm

    @numba.njit(nogil=True)
    def call(address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        gemm(address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return call


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_matches_matmul(product, dtype, trans_a, trans_b):
    from graphnet.kernels.cpu.blas import NO_TRANS, TRANS, gemm_address

    address = gemm_address(np.dtype(dtype))
    if not address:
        pytest.skip("numpy's BLAS here is not an OpenBLAS with 64-bit integers")
    rng = np.random.default_rng(0)
    m, n, k = 7, 5, 6
    # stored wider than used: the leading dimensions are the stored rows' lengths
    a_stored = rng.standard_normal((k, m + 3) if trans_a else (m, k + 3)).astype(dtype)
    b_stored = rng.standard_normal((n, k + 2) if trans_b else (k, n + 2)).astype(dtype)
    c = rng.standard_normal((m, n + 4)).astype(dtype)
    op_a = a_stored[:, :m].T if trans_a else a_stored[:, :k]
    op_b = b_stored[:, :k].T if trans_b else b_stored[:, :n]
    expected = c.copy()
    expected[:, :n] = 0.5 * (op_a.astype(np.float64) @ op_b) + 2.0 * c[:, :n]
    product(address, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, m, n, k, 0.5,
            a_stored, a_stored.shape[1], b_stored, b_stored.shape[1], 2.0, c, c.shape[1])
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tolerance, atol=tolerance)  # (columns past n untouched)


def test_gemm_address_only_for_float32_and_float64():
    from graphnet.kernels.cpu.blas import gemm_address

    assert gemm_address(np.dtype(np.float16)) == 0
    assert gemm_address(np.dtype(np.int64)) == 0
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if blas.get("name") == "scipy-openblas" and "USE64BITINT" in blas.get("openblas configuration", ""):
        # numpy's own wheels: the product is found, so the compiled loops run
        assert gemm_address(np.dtype(np.float32)) and gemm_address(np.dtype(np.float64))
