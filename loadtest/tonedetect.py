"""Streaming detector of tone-burst onsets in returned audio, robust to G.711 and resampling.

A complex demodulator at the tone frequency, averaged over a short window, gives the tone's amplitude
whatever else is in the signal; broadband codec noise and resampler ripple average out. The onset is where
that amplitude crosses a fraction of the expected amplitude, corrected by the window's known ramp delay.
"""

from __future__ import annotations

import numpy as np


class ToneOnsetDetector:
    """Feed decoded samples in stream order; get back the stream positions where a burst begins.

    ``on_fraction``/``off_fraction`` of the sent amplitude give hysteresis, so one burst is one onset even
    if a codec or gain stage changes its level somewhat.
    """

    def __init__(
        self,
        freq_hz: float,
        sample_rate: int,
        amplitude: float,
        window_ms: float = 10.0,
        on_fraction: float = 0.4,
        off_fraction: float = 0.2,
    ) -> None:
        self._omega = 2.0 * np.pi * freq_hz / sample_rate
        self._window = max(4, round(sample_rate * window_ms / 1000))
        self._on = on_fraction * amplitude
        self._off = off_fraction * amplitude
        # Quiet frames (all samples far below the trigger level) skip demodulation entirely.
        self._gate = 0.5 * self._on
        self._ramp = on_fraction * self._window
        self._history = np.zeros(self._window - 1, dtype=np.complex128)
        self._history_quiet = True
        self._position = 0
        self._active = False

    @property
    def position(self) -> int:
        """Samples consumed so far."""
        return self._position

    def skip_silence(self, n: int) -> bool:
        """Consumes ``n`` samples of digital silence without demodulating, when that changes nothing.

        Returns False (nothing consumed) while a burst is active or still in the window; then ``feed``.
        """
        if self._active or not self._history_quiet:
            return False
        self._position += n
        return True

    def feed(self, samples: np.ndarray) -> list[float]:
        """Consumes ``samples``; returns onset positions (fractional stream sample index) found in them."""
        n = len(samples)
        if n == 0:
            return []
        start = self._position
        self._position += n
        if not self._active and self._history_quiet and float(np.max(np.abs(samples))) < self._gate:
            return []
        idx = np.arange(start, start + n, dtype=np.float64)
        z = samples.astype(np.float64) * np.exp(-1j * self._omega * idx)
        joined = np.concatenate([self._history, z])
        csum = np.concatenate([[0.0], np.cumsum(joined)])
        amp = np.abs(csum[self._window :] - csum[: -self._window]) * (2.0 / self._window)
        self._history = joined[-(self._window - 1) :]
        self._history_quiet = float(np.max(np.abs(self._history))) < self._gate
        return self._onsets(amp, start)

    def _onsets(self, amp: np.ndarray, start: int) -> list[float]:
        found: list[float] = []
        i = 0
        n = len(amp)
        while i < n:
            if self._active:
                below = np.flatnonzero(amp[i:] < self._off)
                if len(below) == 0:
                    break
                i += int(below[0])
                self._active = False
            else:
                above = np.flatnonzero(amp[i:] >= self._on)
                if len(above) == 0:
                    break
                i += int(above[0])
                self._active = True
                found.append(start + i + 1 - self._ramp)
        return found
