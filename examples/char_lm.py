"""A character-level transformer language model trained on real text: the Python standard
library's own source files (on every machine). Token and learned position embeddings -> a
causal TransformerEncoder (pre-norm, GELU; attention as one blocked, online-softmax op) ->
LayerNorm -> Linear; AdamW; held-out loss and perplexity as it trains, the curves plotted,
and a sample generated at the end.

    python examples/char_lm.py            (a few minutes on two cores)
"""

from __future__ import annotations

import numpy as np

import graphnet as gn
from _text import parser, train


def char_transformer(vocab: int, length: int, width: int = 128, heads: int = 4, layers: int = 2,
                     dropout: float = 0.1) -> gn.nn.Module:
    class CharTransformer(gn.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = gn.nn.Embedding(vocab, width)
            self.position = gn.nn.Parameter(gn.nn.init.normal((length, 1, width), 0.02))
            layer = gn.nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                                  activation="gelu", norm_first=True)
            self.encoder = gn.nn.TransformerEncoder(layer, layers)
            self.norm = gn.nn.LayerNorm(width)
            self.head = gn.nn.Linear(width, vocab)

        def forward(self, tokens: gn.Tensor) -> gn.Tensor:  # (T, N) -> (T, N, vocab)
            x = self.embed(tokens) * float(np.sqrt(width)) + self.position
            return self.head(self.norm(self.encoder(x, is_causal=True)))

    return CharTransformer()


def main() -> None:
    args = parser(__doc__.splitlines()[0], steps=600, lr=1e-3, length=64).parse_args()
    train(args, "char_lm", lambda tokens, vocab: char_transformer(vocab, args.length)(tokens))


if __name__ == "__main__":
    main()
