"""A byte-level tokenizer with a ChatML-style template, so scripted policies and the Collector run
without any model. Ids 0-255 are bytes; specials follow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ByteTokenizer"]

_SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>")


class ByteTokenizer:
    """UTF-8 bytes as tokens plus five special tokens. Decoding replaces invalid UTF-8 with U+FFFD."""

    def __init__(self) -> None:
        self.special_ids = {tok: 256 + i for i, tok in enumerate(_SPECIALS)}
        self.pad_token_id = self.special_ids["<|pad|>"]
        self.bos_token_id = self.special_ids["<|bos|>"]
        self.eos_token_id = self.special_ids["<|eos|>"]
        self.im_start_id = self.special_ids["<|im_start|>"]
        self.im_end_id = self.special_ids["<|im_end|>"]
        self.vocab_size = 256 + len(_SPECIALS)
        self.pad_token = "<|pad|>"
        self.eos_token = "<|im_end|>"

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def decode(self, ids: Sequence[int] | Any, skip_special_tokens: bool = False) -> str:
        out: list[str] = []
        buf = bytearray()
        for i in [int(x) for x in ids]:
            if i < 256:
                buf.append(i)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special_tokens and i < self.vocab_size:
                out.append(_SPECIALS[i - 256])
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, Any]],
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        return_dict: bool = False,
        **_: Any,
    ) -> list[int] | str:
        """`<|im_start|>role\\ncontent<|im_end|>\\n` per message (ChatML shape)."""
        ids: list[int] = []
        for m in messages:
            ids += [self.im_start_id, *self.encode(f"{m['role']}\n{m.get('content') or ''}"), self.im_end_id]
            ids += self.encode("\n")
        if add_generation_prompt:
            ids += [self.im_start_id, *self.encode("assistant\n")]
        return ids if tokenize else self.decode(ids)
