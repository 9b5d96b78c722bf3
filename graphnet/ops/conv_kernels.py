"""Array kernels for 2-D convolution, pooling and ``erf``.

Every function takes the array module ``xp`` (``numpy`` or ``cupy``) as its
first argument and uses only functionality that both provide
(``as_strided``, ``matmul``, elementwise ufuncs, ``where``, ...).  There are no
Python loops over images, channels or pixels: convolutions are lowered to one
contiguous im2col copy plus a single (group-batched) matmul (the input
gradient adds ``kh`` -- or, for horizontal stride > 1, ``kh * kw`` -- strided
scatter-adds), and pooling is separable: short loops over the ``kh`` and
``kw`` kernel offsets, each a whole-array operation.

Layout is NCHW; weights are ``(O, C // groups, kh, kw)``.  Semantics follow
PyTorch (``conv2d`` is a cross-correlation with zero padding and no bias,
``max_pool2d`` / ``avg_pool2d`` use ``ceil_mode=False``, ``avg_pool2d`` uses
``count_include_pad=True``).  Dtypes are preserved: float32 inputs give float32
outputs and no float64 temporaries are created.

Im2col geometry
---------------
The columns matrix has shape ``(groups, Cg * kh * kw, N * P)`` where ``P`` is
the number of "pixels" per image.  Two layouts are used:

* *flat* (stride 1 and little waste): the padded image is treated as one long
  row-major vector; output position ``(p, q)`` is index ``p * Wp + q`` and the
  kernel offset ``(i, j)`` is the constant shift ``i * dh * Wp + j * dw``.  So
  every column row is a contiguous run of ``P = (Ho - 1) * Wp + Wo`` input
  elements, which makes the im2col copy run at memcpy speed.  The
  ``Wp - Wo`` "wrap-around" positions at the end of each output row are
  computed and discarded (in ``g`` they are set to zero).
* *nhwc* (many input channels): ``x`` is first copied to channels-last; then
  each (output pixel, kernel row) copies one contiguous run of ``kw * Cg``
  values and the matrix is ``(groups, N * Ho * Wo, K)`` with columns ordered
  (i, j, c).  No wasted work; one extra transpose of ``x`` and of the output.
* *standard* (any stride): ``P = Ho * Wo``, the classic strided-window view.

``_ConvGeom`` picks the layout whose copy has the longest contiguous runs.
The input gradient does not use im2col of ``x`` (see ``conv2d_grad_input``).
"""

import math

__all__ = [
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "max_pool2d",
    "max_pool2d_grad",
    "avg_pool2d",
    "avg_pool2d_grad",
    "erf",
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _pair(v):
    if isinstance(v, (tuple, list)):
        a, b = v
        return (int(a), int(b))
    return (int(v), int(v))


def _as_strided(xp, a, shape, strides):
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def _empty(xp, scratch, shape, dtype):
    """An uninitialised array: from ``scratch(shape, dtype)`` (a caller's reusable memory,
    graphnet.kernels.cpu.conv.common.Workspace) or newly allocated."""
    return xp.empty(shape, dtype=dtype) if scratch is None else scratch(shape, dtype)


def _contiguous(xp, a, scratch=None):
    """``a`` as a C-contiguous array (itself if it already is), copied into scratch memory."""
    if scratch is None or a.flags.c_contiguous:
        return xp.ascontiguousarray(a)
    out = scratch(a.shape, a.dtype)
    out[...] = a
    return out


def _zeros(xp, scratch, shape, dtype):
    out = _empty(xp, scratch, shape, dtype)
    out.fill(0)
    return out


def _pad_hw(xp, x, ph, pw, value=0, scratch=None):
    """Pad the two spatial dims of a 4-D array; the result is C-contiguous
    (``x`` itself when no padding is needed and it already is)."""
    if ph == 0 and pw == 0:
        return _contiguous(xp, x, scratch)
    N, C, H, W = x.shape
    out = _empty(xp, scratch, (N, C, H + 2 * ph, W + 2 * pw), x.dtype)
    if value == 0:
        out.fill(0)
    else:
        out.fill(value)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class _ConvGeom:
    """Shapes / layout decisions shared by the three convolution kernels."""

    __slots__ = ("N", "C", "H", "W", "O", "G", "Cg", "Og", "kh", "kw",
                 "sh", "sw", "ph", "pw", "dh", "dw", "Hp", "Wp", "Ho", "Wo",
                 "K", "layout", "P")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
        N, C, H, W = (int(v) for v in x_shape)
        O, Cg, kh, kw = (int(v) for v in w_shape)
        G = int(groups)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        dh, dw = _pair(dilation)
        if G < 1 or C % G or O % G or Cg != C // G:
            raise ValueError(
                "conv2d: incompatible shapes x%s w%s groups=%d"
                % (tuple(x_shape), tuple(w_shape), G))
        Ho = _out_size(H, kh, sh, ph, dh)
        Wo = _out_size(W, kw, sw, pw, dw)
        if Ho < 1 or Wo < 1:
            raise ValueError("conv2d: kernel larger than (padded) input")
        self.N, self.C, self.H, self.W = N, C, H, W
        self.O, self.G, self.Cg, self.Og = O, G, Cg, O // G
        self.kh, self.kw = kh, kw
        self.sh, self.sw, self.ph, self.pw, self.dh, self.dw = sh, sw, ph, pw, dh, dw
        self.Hp, self.Wp = H + 2 * ph, W + 2 * pw
        self.Ho, self.Wo = Ho, Wo
        self.K = Cg * kh * kw
        # Layout choice (see module docstring).  The im2col copy is fast when
        # the contiguous runs it copies are long:
        #   flat: runs of P (but (Wp - Wo) / Wo extra matmul work),
        #   nhwc: runs of kw * Cg (one transpose of x and of the output),
        #   std:  runs of Wo (stride 1) or single elements.
        run_nhwc = kw * Cg if (dw == 1 and G == 1) else Cg
        if sh == 1 and sw == 1 and self.Wp <= 2 * Wo and run_nhwc < 16:
            self.layout = "flat"
        elif run_nhwc >= (Wo if sw == 1 else 2):
            self.layout = "nhwc"
        else:
            self.layout = "std"
        if self.layout == "flat":
            self.P = (Ho - 1) * self.Wp + Wo
        else:
            self.P = Ho * Wo

    def cols(self, xp, x, scratch=None):
        """im2col of ``x``: contiguous ``(G, K, N * P)`` matrix, rows ordered
        (c, i, j); for the nhwc layout ``(G, N * P, K)`` with columns ordered
        (i, j, c)."""
        N, C, G, Cg, kh, kw = self.N, self.C, self.G, self.Cg, self.kh, self.kw
        if self.layout == "nhwc":
            xt = _pad_nhwc(xp, x, self.ph, self.pw, scratch)  # (N, Hp, Wp, C)
            sN, sH, sW, sC = xt.strides
            view = _as_strided(
                xp, xt, (G, N, self.Ho, self.Wo, kh, kw, Cg),
                (Cg * sC, sN, self.sh * sH, self.sw * sW,
                 self.dh * sH, self.dw * sW, sC))
            return _contiguous(xp, view, scratch).reshape(G, N * self.P, self.K)
        xpad = _pad_hw(xp, x, self.ph, self.pw, scratch=scratch)
        sN, sC, sH, sW = xpad.strides
        if self.layout == "flat":
            shape = (C, kh, kw, N, self.P)
            strides = (sC, self.dh * sH, self.dw * sW, sN, sW)
        else:
            shape = (C, kh, kw, N, self.Ho, self.Wo)
            strides = (sC, self.dh * sH, self.dw * sW, sN,
                       self.sh * sH, self.sw * sW)
        view = _as_strided(xp, xpad, shape, strides)
        return _contiguous(xp, view, scratch).reshape(G, self.K, N * self.P)

    def w_mat(self, xp, w, scratch=None):
        """Weights as ``(G, Og, K)`` in the column order of :meth:`cols` (a channels-last
        copy, into scratch memory when given, for the nhwc layout)."""
        if self.layout == "nhwc":
            moved = w.transpose(0, 2, 3, 1)
            w = _empty(xp, scratch, moved.shape, w.dtype)
            xp.copyto(w, moved)
        return w.reshape(self.G, self.Og, self.K)

    def w_from_mat(self, xp, gw, target=None):
        """``(G, Og, K)`` (column order of :meth:`cols`) -> weight layout (written into
        ``target`` when given)."""
        if self.layout == "nhwc":
            gw = gw.reshape(self.O, self.kh, self.kw, self.Cg).transpose(0, 3, 1, 2)
        else:
            gw = gw.reshape(self.O, self.Cg, self.kh, self.kw)
        if target is not None:
            target[...] = gw
            return target
        return xp.ascontiguousarray(gw)

    def out_from_mat(self, xp, out, target=None):
        """Matmul result -> contiguous ``(N, O, Ho, Wo)`` (written into ``target`` when
        given).  ``out`` is ``(G, Og, N * P)``, or ``(G, N * P, Og)`` for the nhwc layout."""
        N, O, Ho, Wo = self.N, self.O, self.Ho, self.Wo
        if self.layout == "flat":
            it = out.itemsize
            P = self.P
            view = _as_strided(xp, out, (N, O, Ho, Wo),
                               (P * it, N * P * it, self.Wp * it, it))
        elif self.layout == "nhwc":
            view = out.reshape(self.G, N, Ho, Wo, self.Og).transpose(1, 0, 4, 2, 3)
            view = view.reshape(N, O, Ho, Wo) if self.G == 1 else view
        else:
            view = out.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3)
        if target is not None:
            target.reshape(view.shape)[...] = view
            return target
        return xp.ascontiguousarray(view).reshape(N, O, Ho, Wo)

    def g_to_mat(self, xp, g, scratch=None):
        """Upstream grad ``(N, O, Ho, Wo)`` -> ``(G, Og, N * P)`` (zeros in the
        discarded wrap-around positions of the flat layout)."""
        gt = g.transpose(1, 0, 2, 3)
        if self.layout == "flat":
            P = self.P
            gm = _zeros(xp, scratch, (self.O, self.N * P), g.dtype)
            it = gm.itemsize
            view = _as_strided(xp, gm, (self.O, self.N, self.Ho, self.Wo),
                               (self.N * P * it, P * it, self.Wp * it, it))
            view[...] = gt
        else:
            gm = _contiguous(xp, gt, scratch)
        return gm.reshape(self.G, self.Og, self.N * self.P)


def _pad_nhwc(xp, x, ph, pw, scratch=None):
    """Zero-padded channels-last copy ``(N, Hp, Wp, C)`` of NCHW ``x``."""
    N, C, H, W = x.shape
    if ph == 0 and pw == 0:
        return _contiguous(xp, x.transpose(0, 2, 3, 1), scratch)
    out = _zeros(xp, scratch, (N, H + 2 * ph, W + 2 * pw, C), x.dtype)
    out[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    return out


def _matmul(xp, a, b, scratch=None):
    # 2-D matmul when there is a single group (avoids the stacked-loop path).
    out = None if scratch is None else scratch((a.shape[0], a.shape[1], b.shape[2]), xp.result_type(a, b))
    if a.shape[0] == 1:
        return xp.matmul(a[0], b[0], out=None if out is None else out[0])[None]
    return xp.matmul(a, b, out=out)


# ----------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------


def conv2d(xp, x, w, *, stride, padding, dilation, groups, out=None, scratch=None):
    """2-D cross-correlation, PyTorch semantics, no bias.

    x: (N, C, H, W), w: (O, C // groups, kh, kw) -> (N, O, Ho, Wo); written into ``out``
    when given (as every convolution kernel here). ``scratch(shape, dtype)``, when given,
    supplies the temporaries (padded input, columns, product) from memory the caller reuses.
    """
    geo = _ConvGeom(x.shape, w.shape, stride, padding, dilation, groups)
    cols = geo.cols(xp, x, scratch)
    wm = geo.w_mat(xp, w, scratch)                           # (G, Og, K)
    if geo.layout == "nhwc":
        product = _matmul(xp, cols, wm.transpose(0, 2, 1), scratch)  # (G, N*P, Og)
    else:
        product = _matmul(xp, wm, cols, scratch)                     # (G, Og, N*P)
    if out is not None and out.flags.c_contiguous:
        return geo.out_from_mat(xp, product, out)
    return _into(xp, geo.out_from_mat(xp, product), out)


def _into(xp, result, out):
    """``result``, or ``out`` holding it."""
    if out is None:
        return result
    xp.copyto(out, result)
    return out


def conv2d_grad_input(xp, g, w, x, *, stride, padding, dilation, groups, out=None, scratch=None):
    """Gradient of ``conv2d`` w.r.t. ``x`` (``x`` is used only for its shape).

    Horizontal stride 1 (the common case): the kw taps are folded into the
    matmul as a "full" 1-D correlation along W and only the kh row taps are
    scatter-added.  ``g`` is laid out as one long vector of Wp-wide rows with
    its Wo values at columns [e, Wp) (e = (kw-1)*dw) and zeros in [0, e); the
    zero block at the start of the *next* row doubles as the right padding of
    the current one, so each (o, j) row of the columns matrix is a single
    contiguous slice and the matmul yields whole padded input rows:

        T[c, i, n, r, :] = sum_{o, j} w[o, c, i, j] * g[o, n, r, : - j*dw]
        dx_pad[n, c, r*sh + i*dh, :] += T[c, i, n, r, :]

    Otherwise: classic col2im (matmul then kh*kw strided scatter-adds).
    """
    geo = _ConvGeom(x.shape, w.shape, stride, padding, dilation, groups)
    N, C, O, G, Cg, Og = geo.N, geo.C, geo.O, geo.G, geo.Cg, geo.Og
    kh, kw, sh, sw, dh, dw = geo.kh, geo.kw, geo.sh, geo.sw, geo.dh, geo.dw
    Ho, Wo, Hp, Wp = geo.Ho, geo.Wo, geo.Hp, geo.Wp
    hspan = sh * (Ho - 1) + 1
    if sw == 1:
        e = (kw - 1) * dw                      # == Wp - Wo
        L = N * Ho * Wp
        gz = _zeros(xp, scratch, (O, L + e), g.dtype)
        it = gz.itemsize
        _as_strided(xp, gz[:, e:], (O, N, Ho, Wo),
                    ((L + e) * it, Ho * Wp * it, Wp * it, it))[...] = \
            g.transpose(1, 0, 2, 3)
        gcols = _contiguous(xp, _as_strided(xp, gz, (O, kw, L), ((L + e) * it, dw * it, it)), scratch)
        gcols = gcols.reshape(G, Og * kw, L)
        # wt[g, (c, i), (o, j')] = w[g*Og + o, c, i, kw - 1 - j']
        wt = w.reshape(G, Og, Cg, kh, kw)[:, :, :, :, ::-1]
        wt = _contiguous(xp, wt.transpose(0, 2, 3, 1, 4), scratch).reshape(G, Cg * kh, Og * kw)
        T = _matmul(xp, wt, gcols, scratch).reshape(C, kh, N, Ho, Wp)
        dxpad = _padded_target(xp, out, scratch, (N, C, Hp, Wp), T.dtype, geo)
        dxt = dxpad.transpose(1, 0, 2, 3)                  # (C, N, Hp, Wp)
        for i in range(kh):
            dxt[:, :, i * dh:i * dh + hspan:sh] += T[:, i]
    else:
        gm = _contiguous(xp, g.transpose(1, 0, 2, 3), scratch).reshape(G, Og, N * Ho * Wo)
        wm = w.reshape(G, Og, geo.K)
        dc = _matmul(xp, wm.transpose(0, 2, 1), gm, scratch).reshape(C, kh, kw, N, Ho, Wo)
        dxpad = _padded_target(xp, out, scratch, (N, C, Hp, Wp), dc.dtype, geo)
        dxt = dxpad.transpose(1, 0, 2, 3)                  # (C, N, Hp, Wp)
        wspan = sw * (Wo - 1) + 1
        for i in range(kh):
            r0 = i * dh
            for j in range(kw):
                c0 = j * dw
                dxt[:, :, r0:r0 + hspan:sh, c0:c0 + wspan:sw] += dc[:, i, j]
    if geo.ph or geo.pw:
        return _into(xp, dxpad[:, :, geo.ph:geo.ph + geo.H, geo.pw:geo.pw + geo.W], out) if out is not None \
            else xp.ascontiguousarray(dxpad[:, :, geo.ph:geo.ph + geo.H, geo.pw:geo.pw + geo.W])
    return dxpad if dxpad is out else _into(xp, dxpad, out)


def _padded_target(xp, out, scratch, shape, dtype, geo):
    """The zeroed array the input gradient accumulates into: ``out`` itself when there is no
    padding to crop and it is C-contiguous, else scratch memory."""
    if out is not None and not (geo.ph or geo.pw) and out.flags.c_contiguous and out.dtype == dtype:
        out.fill(0)
        return out
    return _zeros(xp, scratch, shape, dtype)


def conv2d_grad_weight(xp, x, g, w, *, stride, padding, dilation, groups, out=None, scratch=None):
    """Gradient of ``conv2d`` w.r.t. ``w`` (``w`` is used only for its shape)."""
    geo = _ConvGeom(x.shape, w.shape, stride, padding, dilation, groups)
    cols = geo.cols(xp, x, scratch)
    gm = geo.g_to_mat(xp, g, scratch)                        # (G, Og, N*P)
    if geo.layout == "nhwc":
        gw = _matmul(xp, gm, cols, scratch)                  # (G, Og, K)
    elif geo.K <= 64:
        # small K: (K, NP) @ (NP, Og) is the faster BLAS shape here
        gw = _matmul(xp, cols, gm.transpose(0, 2, 1), scratch).transpose(0, 2, 1)
    else:
        gw = _matmul(xp, gm, cols.transpose(0, 2, 1), scratch)  # (G, Og, K)
    return geo.w_from_mat(xp, gw, out)


# ----------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------


def _pool_geom(x_shape, kernel_size, stride, padding):
    N, C, H, W = (int(v) for v in x_shape)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError("pool2d: kernel larger than (padded) input")
    return N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo


def _neg_inf(xp, dtype):
    if dtype.kind == "f":
        return -math.inf
    return xp.iinfo(dtype).min


def _window_reduce(xp, xpad, kh, kw, sh, sw, Ho, Wo, ufunc, scratch=None, result=None):
    """Separable reduction of every (kh, kw) window: first along H (whole
    contiguous rows), then along W on the already smaller array. ``scratch``: where
    the row reduction comes from; ``result``: a C-contiguous (N, C, Ho, Wo) array to
    write the windows' values into."""
    hspan = sh * (Ho - 1) + 1
    wspan = sw * (Wo - 1) + 1
    xr = xpad[:, :, :, :wspan + kw - 1]
    if kh == 1:
        r = xr[:, :, 0:hspan:sh]
    else:
        r = _empty(xp, scratch, xr[:, :, 0:hspan:sh].shape, xpad.dtype)
        ufunc(xr[:, :, 0:hspan:sh], xr[:, :, 1:1 + hspan:sh], out=r)
        for i in range(2, kh):
            ufunc(r, xr[:, :, i:i + hspan:sh], out=r)
    if kw == 1:
        view = r[:, :, :, 0:wspan:sw]
        if result is not None:
            xp.copyto(result, view)
            return result
        return view.copy() if kh == 1 else xp.ascontiguousarray(view)
    out = result if result is not None else xp.empty(r[:, :, :, 0:wspan:sw].shape, xpad.dtype)
    ufunc(r[:, :, :, 0:wspan:sw], r[:, :, :, 1:1 + wspan:sw], out=out)
    for j in range(2, kw):
        ufunc(out, r[:, :, :, j:j + wspan:sw], out=out)
    return out


def _first_max(xp, views, need_max=True, scratch=None, best_out=None):
    """Running maximum over ``views`` plus the index of the first view that
    attains it (bool for two views, uint8 otherwise). ``scratch``: where the
    temporaries come from; ``best_out``: where the maximum is written (when there
    is more than one view)."""
    best = views[0]
    idx = None
    n = len(views)
    itype = xp.uint8 if n <= 255 else xp.int32
    upd = _empty(xp, scratch, best.shape, xp.bool_) if n > 1 else None
    for t in range(1, n):
        v = views[t]
        xp.greater(v, best, out=upd)       # strict: ties keep the earlier one
        if n == 2:
            idx = upd
        elif idx is None:
            idx = _empty(xp, scratch, best.shape, itype)
            idx[...] = upd
        else:
            xp.copyto(idx, itype(t), where=upd)
        if t == n - 1 and not need_max:
            break
        if t == 1:
            best = xp.maximum(best, v, out=best_out if best_out is not None else
                              _empty(xp, scratch, best.shape, best.dtype))
        else:
            xp.maximum(best, v, out=best)
    return best, idx


def _spread(xp, src, idx, n, targets, accumulate):
    """targets[t] (+)= src where idx == t  (t < n); idx None means n == 1."""
    if n == 1:
        if accumulate:
            targets[0] += src
        else:
            targets[0][...] = src
        return
    for t in range(n):
        if n == 2:
            if t == 1:
                m = idx
            else:
                m = xp.logical_not(idx)
        else:
            m = xp.equal(idx, idx.dtype.type(t))
        if accumulate:
            targets[t] += xp.multiply(src, m)
        else:
            xp.multiply(src, m, out=targets[t])


def max_pool2d(xp, x, *, kernel_size, stride, padding):
    """PyTorch ``MaxPool2d`` (padding with -inf, ceil_mode=False, dilation 1)."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    xpad = x if (ph == 0 and pw == 0) else _pad_hw(
        xp, x, ph, pw, value=_neg_inf(xp, x.dtype))
    return _window_reduce(xp, xpad, kh, kw, sh, sw, Ho, Wo, xp.maximum)


def max_pool2d_grad(xp, g, x, *, kernel_size, stride, padding):
    """Gradient of ``max_pool2d`` w.r.t. ``x``.

    Each window's gradient goes to exactly one element: the first maximal one
    in row-major window order (as PyTorch does); overlapping windows
    accumulate.  The arg-max is found separably: for every input row the
    first maximal column of each window segment, then for every window the
    first row whose segment maximum is the window maximum.  NaN inputs are
    not tracked (their window's gradient goes to the window's first element)
    and ``g`` is routed by multiplying with 0/1 masks (so an infinite ``g``
    produces NaNs).
    """
    _, column_arg, row_arg = _pool_argmax(xp, x, kernel_size, stride, padding, need_max=False)
    return _route_to_argmax(xp, g, column_arg, row_arg, x.shape, kernel_size, stride, padding)


def _pool_argmax(xp, x, kernel_size, stride, padding, need_max=True, scratch=None, best_out=None):
    """The separable arg-max of every window: (window maxima or None, for each input row and
    window column the first maximal column, for each window the first maximal row)."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    xpad = _pad_hw(xp, x, ph, pw, value=_neg_inf(xp, x.dtype), scratch=scratch) if ph or pw else x
    rows = sh * (Ho - 1) + kh
    hspan = sh * (Ho - 1) + 1
    wspan = sw * (Wo - 1) + 1
    xr = xpad[:, :, :rows]
    rmax, column_arg = _first_max(xp, [xr[:, :, :, j:j + wspan:sw] for j in range(kw)], scratch=scratch)
    best, row_arg = _first_max(xp, [rmax[:, :, i:i + hspan:sh] for i in range(kh)], need_max=need_max,
                               scratch=scratch, best_out=best_out)
    return (best if need_max else None), column_arg, row_arg


def _route_to_argmax(xp, g, column_arg, row_arg, x_shape, kernel_size, stride, padding, out=None):
    """Each window's gradient to its arg-max element (``_pool_argmax``'s indices), written
    into ``out`` when given."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x_shape, kernel_size, stride, padding)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    rows = sh * (Ho - 1) + kh
    hspan = sh * (Ho - 1) + 1
    wspan = sw * (Wo - 1) + 1
    dtype = g.dtype
    # route g to rows: rg (N, C, rows, Wo)
    if kh == 1 and sh == 1:
        rg = g
    else:
        rg = (xp.empty if kh == sh else xp.zeros)((N, C, rows, Wo), dtype=dtype)
        _spread(xp, g, row_arg, kh,
                [rg[:, :, i:i + hspan:sh] for i in range(kh)], kh > sh)
    # route rows to columns
    exact = kh == sh and kw == sw and rows == Hp and wspan + kw - 1 == Wp
    if out is not None and not (ph or pw):
        dxpad = out
        if not exact:
            dxpad[...] = 0
    else:
        dxpad = (xp.empty if exact else xp.zeros)((N, C, Hp, Wp), dtype=dtype)
    dr = dxpad[:, :, :rows]
    _spread(xp, rg, column_arg, kw,
            [dr[:, :, :, j:j + wspan:sw] for j in range(kw)], kw > sw)
    if ph or pw:
        return _into(xp, xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W]), out)
    return dxpad


def _saved_arg(xp, arg, shape, target=None):
    """An arg-max of ``_first_max`` as uint8 of a fixed shape (zeros where one tap had no
    choice), written into ``target`` when given."""
    if target is None:
        return xp.zeros(shape, xp.uint8) if arg is None else arg.astype(xp.uint8)
    if arg is None:
        target.fill(0)
    else:
        target[...] = arg
    return target


def max_pool2d_saving(xp, x, *, kernel_size, stride, padding, out=None, scratch=None):
    """``max_pool2d`` that also keeps where each maximum was found, for
    ``max_pool2d_grad_saved``: (y (N, C, Ho, Wo), the first maximal column of each window
    segment per input row (N, C, rows, Wo) uint8, the first maximal row per window
    (N, C, Ho, Wo) uint8), ``rows = stride_h * (Ho - 1) + kernel_h``. ``out``: a tuple
    with an array or None per result; ``scratch``: where the temporaries come from."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    targets = out if out is not None else (None, None, None)
    y_out = targets[0] if targets[0] is not None and targets[0].flags.c_contiguous else None
    y, column_arg, row_arg = _pool_argmax(xp, x, kernel_size, stride, padding, scratch=scratch, best_out=y_out)
    if targets[0] is not None and y is not targets[0]:
        y = _into(xp, y, targets[0])
    elif y.base is not None and y is not y_out:  # a 1x1 window: a view of x
        y = y.copy()
    rows = sh * (Ho - 1) + kh
    return (y, _saved_arg(xp, column_arg, (N, C, rows, Wo), targets[1]),
            _saved_arg(xp, row_arg, (N, C, Ho, Wo), targets[2]))


def max_pool2d_grad_saved(xp, g, column_arg, row_arg, x, *, kernel_size, stride, padding, out=None):
    """``max_pool2d_grad`` from the arg-max ``max_pool2d_saving`` kept (``x`` is used only
    for its shape): the same result, without searching the windows again."""
    kh, kw = _pair(kernel_size)
    return _route_to_argmax(xp, g, column_arg if kw > 1 else None, row_arg if kh > 1 else None, x.shape,
                            kernel_size, stride, padding, out)


def _select(xp, views, idx, n):
    """views[idx] elementwise (the adjoint of ``_spread``); idx None means n == 1."""
    if n == 1:
        return views[0].copy()
    out = xp.zeros(views[0].shape, dtype=views[0].dtype)
    for t in range(n):
        if n == 2:
            m = idx if t == 1 else xp.logical_not(idx)
        else:
            m = xp.equal(idx, idx.dtype.type(t))
        out += xp.multiply(views[t], m)
    return out


def max_pool2d_select(xp, h, x, *, kernel_size, stride, padding):
    """``h`` (shaped like ``x``) read at each window's first maximal element of ``x``: the
    adjoint of ``max_pool2d_grad`` in its gradient argument, so gradients of max-pool
    gradients (gradient penalties) exist. (N, C, H, W) -> (N, C, Ho, Wo)."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    padded = ph or pw
    xpad = _pad_hw(xp, x, ph, pw, value=_neg_inf(xp, x.dtype)) if padded else x
    hpad = _pad_hw(xp, h, ph, pw) if padded else h
    rows = sh * (Ho - 1) + kh
    hspan = sh * (Ho - 1) + 1
    wspan = sw * (Wo - 1) + 1
    xr, hr = xpad[:, :, :rows], hpad[:, :, :rows]
    rmax, jidx = _first_max(xp, [xr[:, :, :, j:j + wspan:sw] for j in range(kw)])
    _, iidx = _first_max(xp, [rmax[:, :, i:i + hspan:sh] for i in range(kh)], need_max=False)
    per_row = _select(xp, [hr[:, :, :, j:j + wspan:sw] for j in range(kw)], jidx, kw)
    return _select(xp, [per_row[:, :, i:i + hspan:sh] for i in range(kh)], iidx, kh)


def avg_pool2d(xp, x, *, kernel_size, stride, padding, out=None, scratch=None):
    """PyTorch ``AvgPool2d`` (count_include_pad=True, ceil_mode=False). ``out``: where
    to write the result; ``scratch``: where the temporaries come from."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    xpad = x if (ph == 0 and pw == 0) else _pad_hw(xp, x, ph, pw, scratch=scratch)
    result = out if out is not None and out.flags.c_contiguous else None
    s = _window_reduce(xp, xpad, kh, kw, sh, sw, Ho, Wo, xp.add, scratch=scratch, result=result)
    if kh * kw != 1:
        xp.multiply(s, s.dtype.type(1.0 / (kh * kw)), out=s)
    return _into(xp, s, out) if out is not None and s is not out else s


def avg_pool2d_grad(xp, g, x, *, kernel_size, stride, padding, out=None, scratch=None):
    """Gradient of ``avg_pool2d`` w.r.t. ``x`` (adjoint of the separable sum:
    spread along W on the small array, then along H with whole rows); ``x`` is read
    for its shape only. ``out``: where to write the result; ``scratch``: where the
    temporaries come from."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo = _pool_geom(
        x.shape, kernel_size, stride, padding)
    dtype = g.dtype
    gs = _empty(xp, scratch, g.shape, dtype)
    xp.multiply(g, dtype.type(1.0 / (kh * kw)), out=gs)
    Hp, Wp = H + 2 * ph, W + 2 * pw
    hspan = sh * (Ho - 1) + 1
    wspan = sw * (Wo - 1) + 1
    cols = wspan + kw - 1
    if kw == 1 and sw == 1:
        r = gs
    else:
        r = _empty(xp, scratch, (N, C, Ho, cols), dtype)
        if kw != sw:
            r.fill(0)
        for j in range(kw):
            if kw > sw:
                r[:, :, :, j:j + wspan:sw] += gs
            else:
                r[:, :, :, j:j + wspan:sw] = gs
    exact = kh == sh and kw == sw and hspan + kh - 1 == Hp and cols == Wp
    direct = not (ph or pw) and out is not None and out.flags.c_contiguous
    dxpad = out if direct else _empty(xp, scratch, (N, C, Hp, Wp), dtype) if out is not None \
        else xp.empty((N, C, Hp, Wp), dtype=dtype)
    if not exact:
        dxpad.fill(0)
    dc = dxpad[:, :, :, :cols]
    for i in range(kh):
        if kh > sh:
            dc[:, :, i:i + hspan:sh] += r
        else:
            dc[:, :, i:i + hspan:sh] = r
    if direct:
        return out
    cropped = dxpad[:, :, ph:ph + H, pw:pw + W]
    if out is not None:
        return _into(xp, cropped, out)
    return xp.ascontiguousarray(cropped) if (ph or pw) else dxpad


# ----------------------------------------------------------------------------
# erf
# ----------------------------------------------------------------------------


def _erf_params(dtype):
    """(threshold, Taylor coefficients, continued-fraction depth, clip)."""
    if dtype.itemsize >= 8:
        key = (2.0, 30, 19, 6.0)      # abs error ~1e-15 (f64)
    else:
        key = (1.5, 16, 10, 4.0)      # abs error ~1e-7 (f32 / f16)
    cached = _ERF_CACHE.get(key)
    if cached is None:
        T, n_taylor, n_cf, x_max = key
        two_over_sqrt_pi = 2.0 / math.sqrt(math.pi)
        coeffs = [two_over_sqrt_pi * (-1) ** k / (math.factorial(k) * (2 * k + 1))
                  for k in range(n_taylor)]
        cached = _ERF_CACHE[key] = (T, coeffs, n_cf, x_max)
    return cached


_ERF_CACHE = {}


def erf(xp, x):
    """Error function, elementwise; ~1e-15 absolute accuracy in float64
    (~1e-7 in float32).  Returns ``x.dtype`` (integers -> float64).

    |x| < T: Maclaurin series ``2/sqrt(pi) * sum (-1)^k x^(2k+1) / (k! (2k+1))``
    with a fixed number of terms (Horner form in x^2).
    |x| >= T: ``erf = sign(x) * (1 - erfc(|x|))`` with erfc from the even
    contraction of Laplace's continued fraction (fixed depth, bottom-up):
    ``erfc(x) = exp(-x^2)/sqrt(pi) * 2x / (2x^2+1 - 1*2/(2x^2+5 - 3*4/(2x^2+9 - ...)))``.
    Both branches are evaluated on clipped inputs and combined with ``where``
    (|x| is clipped to 6, beyond which erf(x) == +-1 in float64).
    """
    x = xp.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(xp.float64)
    shape = x.shape
    x = x.reshape(-1)  # 1-D work arrays (0-d ufunc results would be scalars)
    dt = x.dtype
    T, coeffs, n_cf, x_max = _erf_params(dt)
    c = dt.type
    a = xp.abs(x)
    # Maclaurin branch on [-T, T]
    xs = xp.clip(x, c(-T), c(T))
    z = xs * xs
    s = xp.full(x.shape, coeffs[-1], dtype=dt)
    for ck in coeffs[-2::-1]:
        s *= z
        s += c(ck)
    s *= xs
    # continued-fraction branch on [T, x_max]
    y = xp.clip(a, c(T), c(x_max))
    u = y * y
    e = xp.exp(-u)                        # exp(-y^2)
    u += u                                # 2 y^2
    t = u + c(4 * n_cf + 1)
    for k in range(n_cf, 0, -1):
        xp.divide(c((2 * k - 1) * (2 * k)), t, out=t)
        xp.subtract(u, t, out=t)
        t += c(4 * k - 3)
    e *= y
    e *= c(2.0 / math.sqrt(math.pi))
    e /= t                                # erfc(y)
    big = c(1.0) - e
    big = xp.where(x < 0, -big, big)
    return xp.where(a < c(T), s, big).astype(dt, copy=False).reshape(shape)
