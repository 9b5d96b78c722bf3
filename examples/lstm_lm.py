"""A character-level LSTM language model trained on real text: the Python standard library's
own source files (on every machine). Embedding -> LSTM (one gn.scan per layer: the plan does
not grow with the window) -> Linear; AdamW; held-out loss and perplexity as it trains, the
curves plotted, and a sample generated at the end.

    python examples/lstm_lm.py            (a few minutes on two cores)
"""

from __future__ import annotations

import graphnet as gn
from _text import parser, train


def lstm_lm(vocab: int, embed: int = 64, hidden: int = 256, layers: int = 1) -> gn.nn.Module:
    class LSTMLanguageModel(gn.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = gn.nn.Embedding(vocab, embed)
            self.lstm = gn.nn.LSTM(embed, hidden, num_layers=layers)
            self.head = gn.nn.Linear(hidden, vocab)

        def forward(self, tokens: gn.Tensor) -> gn.Tensor:
            return self.head(self.lstm(self.embed(tokens))[0])  # (T, N, vocab)

    return LSTMLanguageModel()


def main() -> None:
    args = parser(__doc__.splitlines()[0], steps=600, lr=3e-3, length=64).parse_args()
    train(args, "lstm_lm", lambda tokens, vocab: lstm_lm(vocab)(tokens))


if __name__ == "__main__":
    main()
