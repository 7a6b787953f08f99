"""A seeded synthetic drum-rudiment data set (10 classes) and its log-mel features.

Each clip is 2 s at 16 kHz: a rudiment's sticking pattern repeated at a random tempo (70–140
BPM), every hit a decaying sine plus a noise burst, the left hand lower-pitched and duller than
the right, grace notes (flams, drags) soft, accents loud, with timing jitter and background noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lambda_hat.engine.tasks import task

SR = 16000
CLIP_SEC = 2.0
N_MELS = 64
N_FFT = 512
HOP = 256

# (position in 16th notes, hand, velocity): one cycle of each pattern; grace notes sit 1/8 of a
# 16th before their main stroke. Velocity 0.35 grace, 0.7 tap, 1.0 accent.
G = -0.125
RUDIMENTS: dict[str, list[tuple[float, str, float]]] = {
    "single_stroke_roll": [(0, "R", 0.7), (1, "L", 0.7), (2, "R", 0.7), (3, "L", 0.7)],
    "double_stroke_roll": [(0, "R", 0.7), (1, "R", 0.7), (2, "L", 0.7), (3, "L", 0.7)],
    "paradiddle": [(0, "R", 1.0), (1, "L", 0.7), (2, "R", 0.7), (3, "R", 0.7), (4, "L", 1.0), (5, "R", 0.7), (6, "L", 0.7), (7, "L", 0.7)],
    "five_stroke_roll": [
        (0, "R", 0.7),
        (0.5, "R", 0.7),
        (1, "L", 0.7),
        (1.5, "L", 0.7),
        (2, "R", 1.0),
        (4, "L", 0.7),
        (4.5, "L", 0.7),
        (5, "R", 0.7),
        (5.5, "R", 0.7),
        (6, "L", 1.0),
    ],
    "flam": [(G, "L", 0.35), (0, "R", 1.0), (2 + G, "R", 0.35), (2, "L", 1.0)],
    "flam_tap": [(G, "L", 0.35), (0, "R", 1.0), (1, "R", 0.7), (2 + G, "R", 0.35), (2, "L", 1.0), (3, "L", 0.7)],
    "flam_accent": [
        (G, "L", 0.35),
        (0, "R", 1.0),
        (1.333, "L", 0.7),
        (2.667, "R", 0.7),
        (4 + G, "R", 0.35),
        (4, "L", 1.0),
        (5.333, "R", 0.7),
        (6.667, "L", 0.7),
    ],
    "drag": [(2 * G, "L", 0.35), (G, "L", 0.35), (0, "R", 1.0), (2 + 2 * G, "R", 0.35), (2 + G, "R", 0.35), (2, "L", 1.0)],
    "single_drag_tap": [
        (2 * G, "L", 0.35),
        (G, "L", 0.35),
        (0, "R", 0.7),
        (1, "L", 1.0),
        (2 + 2 * G, "R", 0.35),
        (2 + G, "R", 0.35),
        (2, "L", 0.7),
        (3, "R", 1.0),
    ],
    "ratamacue": [
        (2 * G, "L", 0.35),
        (G, "L", 0.35),
        (0, "R", 0.7),
        (0.667, "L", 0.7),
        (1.333, "R", 0.7),
        (2, "L", 1.0),
        (4 + 2 * G, "R", 0.35),
        (4 + G, "R", 0.35),
        (4, "L", 0.7),
        (4.667, "R", 0.7),
        (5.333, "L", 0.7),
        (6, "R", 1.0),
    ],
}
CLASSES = list(RUDIMENTS)
CYCLE = {k: 8 if max(p for p, _, _ in v) >= 4 else 4 for k, v in RUDIMENTS.items()}  # 16ths per cycle
SIZES = {"tiny": (40, 10, 10), "small": (100, 25, 25)}  # train/val/test clips per class
TEMPO_BUCKETS = (70, 84, 98, 112, 126, 141)  # the pretraining proxy label: tempo in 5 buckets


@dataclass(frozen=True)
class Clip:
    wave: np.ndarray
    label: int
    tempo: float


def render(name: str, rng: np.random.Generator) -> Clip:
    tempo = rng.uniform(70, 140)
    sixteenth = 60.0 / tempo / 4
    n = int(SR * CLIP_SEC)
    wave = 0.01 * rng.standard_normal(n)  # room noise
    t = np.arange(int(0.25 * SR)) / SR
    offset = rng.uniform(0, sixteenth * CYCLE[name])
    start = -offset
    while start < CLIP_SEC:
        for pos, hand, vel in RUDIMENTS[name]:
            at = start + pos * sixteenth + rng.normal(0, 0.004)  # human timing jitter
            i = int(at * SR)
            if not 0 <= i < n:
                continue
            f0, decay = (190.0, 28.0) if hand == "R" else (150.0, 40.0)  # left: lower, duller
            f = f0 * rng.uniform(0.97, 1.03)
            hit = np.sin(2 * np.pi * f * t) * np.exp(-decay * t) + 0.5 * rng.standard_normal(len(t)) * np.exp(-120 * t)
            m = min(len(t), n - i)
            wave[i : i + m] += vel * rng.uniform(0.85, 1.15) * hit[:m]
        start += sixteenth * CYCLE[name]
    return Clip((wave / (np.abs(wave).max() + 1e-9)).astype(np.float32), CLASSES.index(name), tempo)


def make(size: str, seed: int) -> dict[str, np.ndarray]:
    """Splits train/val/test (balanced) plus a pretraining split labelled by tempo bucket."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in zip(("train", "val", "test", "pretrain"), (*SIZES[size], SIZES[size][0])):
        clips = [render(name, rng) for name in CLASSES for _ in range(per_class)]
        out[f"{split}_x"] = np.stack([c.wave for c in clips])
        out[f"{split}_y"] = np.array([c.label for c in clips])
        out[f"{split}_tempo"] = np.digitize([c.tempo for c in clips], TEMPO_BUCKETS[1:-1])
    return out


@dataclass(frozen=True)
class RudimentsData:
    size: str  # a SIZES key
    seed: int


@task(RudimentsData)
def generate(ctx, cfg: RudimentsData) -> dict:
    """Cached task: the data set of one (size, seed), as data.npz in its store directory."""
    data = make(cfg.size, cfg.seed)
    np.savez(ctx.workdir / "data.npz", **{k: v.astype(np.float16) if k.endswith("_x") else v for k, v in data.items()})
    return {"clips": int(sum(len(v) for k, v in data.items() if k.endswith("_y"))), "classes": len(CLASSES)}


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SR) -> np.ndarray:
    """Triangular filters evenly spaced on the mel scale (HTK formula), shape (n_fft//2+1, n_mels)."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(20.0), mel(sr / 2), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return fb.T.astype(np.float32)
