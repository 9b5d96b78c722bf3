"""CPU convolutions: ``algorithms.py`` (the candidates per op), ``chooser.py`` (which one runs,
by cost rule or timing, and how a convolution splits among threads), ``common.py`` (geometry,
workspace), ``nhwc.py``/``shifted.py`` (two column layouts), ``loops.py``, ``nhwc_chunks.py``,
``image_chunks.py`` (their numba loops)."""
