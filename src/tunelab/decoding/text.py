"""Token ids -> text while decoding: stop strings and streaming deltas that are safe to print.

A token can end in the middle of a UTF-8 character (byte-level BPE), and a stop string can
arrive split across tokens. `TextTracker` re-decodes a sequence's tokens, holds back a tail
that ends in an incomplete character (decoded as U+FFFD) or that could still grow into a stop
string, and cuts the text before the first stop string when one is complete.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextTracker:
    """The text of one generated sequence as tokens arrive."""

    def __init__(self, tokenizer, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.tokens: list[int] = []
        self.emitted = 0
        """Characters of the text already handed out by `delta`."""
        self.text = ""
        self.stopped = False

    def add(self, token: int) -> None:
        """Append a token; sets `stopped` (and cuts `text`) when a stop string is complete."""
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if self.stop:
            hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True

    def _safe_end(self) -> int:
        end = len(self.text)
        if self.stopped:
            return end
        while end > self.emitted and self.text[end - 1] == REPLACEMENT:
            end -= 1  # an incomplete multi-byte character: wait for its next token
        for s in self.stop:  # a tail that could still grow into a stop string
            for k in range(min(len(s) - 1, end), 0, -1):
                if self.text[end - k : end] == s[:k]:
                    end -= k
                    break
        return max(end, self.emitted)

    def delta(self, final: bool = False) -> str:
        """Text not handed out yet that can no longer change (everything when `final`)."""
        end = len(self.text) if final else self._safe_end()
        out = self.text[self.emitted : end]
        self.emitted = end
        return out
