"""Types of the C extension gateway/_polyphase.c (streaming integer-ratio int16 resampler)."""

from typing_extensions import Buffer

KERNELS: tuple[str, ...]

class PolyphaseFIR:
    def __init__(self, bank: Buffer, up: int, down: int, *, kernel: str | None = None) -> None: ...
    def process(self, pcm: Buffer, /) -> bytes: ...
    def reset(self) -> None: ...
