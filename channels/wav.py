"""A playable WAV for the sandbox's recordings: 8 kHz mono 16-bit PCM (telephone
quality), tone bursts and pauses that sound like two people taking turns."""

from __future__ import annotations

import array
import math
import random
import sys
import wave
from pathlib import Path

RATE = 8000
CONTENT_TYPE = "audio/wav"
_SYLLABLE_S = 0.18


def _syllable(frequency: float, amplitude: int) -> bytes:
    """One burst with a smooth rise and fall, so it does not click."""
    count = int(RATE * _SYLLABLE_S)
    samples = array.array(
        "h",
        (
            int(
                amplitude
                * math.sin(math.pi * i / count)
                * (
                    0.7 * math.sin(2 * math.pi * frequency * i / RATE)
                    + 0.3 * math.sin(4 * math.pi * frequency * i / RATE)
                )
            )
            for i in range(count)
        ),
    )
    if sys.byteorder == "big":  # WAV is little-endian
        samples.byteswap()
    return samples.tobytes()


# Two voices (a lower and a higher one), a few pitches each; built once.
_VOICES = (
    [_syllable(f, 9000) for f in (110, 125, 140, 118)],
    [_syllable(f, 8000) for f in (190, 215, 240, 205)],
)
_SILENCE = bytes(2 * int(RATE * _SYLLABLE_S))


def write_wav(path: Path, duration_s: float, rng: random.Random) -> None:
    """Write `duration_s` seconds of turn-taking speech-like audio to `path`, whole or
    not at all (a temporary file renamed into place)."""
    frames_wanted = int(RATE * duration_s) * 2  # bytes: 16-bit mono
    chunks: list[bytes] = []
    size = 0
    voice = 0
    while size < frames_wanted:
        # A turn: a few syllables with short gaps, then a pause and the other voice.
        for _ in range(rng.randint(3, 12)):
            chunk = rng.choice(_VOICES[voice]) if rng.random() < 0.8 else _SILENCE
            chunks.append(chunk)
            size += len(chunk)
        chunks.append(_SILENCE * rng.randint(1, 3))
        size += len(chunks[-1])
        voice = 1 - voice
    data = b"".join(chunks)[:frames_wanted]
    partial = path.with_name(path.name + ".part")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(data)
    partial.replace(path)
