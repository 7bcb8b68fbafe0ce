"""Cine clips (frames x H x W in [0, 1]) as files people can look at: PNG frames, an animated GIF and a
one-image filmstrip. Used by `predict`, the generator evaluation and the dashboard."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def to_images(clip: np.ndarray, scale: int = 2) -> list[Image.Image]:
    """Greyscale PIL images, upscaled with nearest-neighbour so small clips stay visible."""
    frames = (np.clip(np.asarray(clip, dtype=float), 0, 1) * 255).round().astype(np.uint8)
    return [Image.fromarray(f, mode="L").resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]


def gif_bytes(clip: np.ndarray, *, cycle_s: float = 1.0, scale: int = 2) -> bytes:
    """Looping animation of one cardiac cycle lasting `cycle_s` seconds, as GIF bytes."""
    images = to_images(clip, scale)
    buffer = io.BytesIO()
    duration_ms = max(20, int(1000 * cycle_s / len(images)))
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def save_gif(clip: np.ndarray, path: str | Path, *, cycle_s: float = 1.0, scale: int = 2) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gif_bytes(clip, cycle_s=cycle_s, scale=scale))
    return path


def save_frames(clip: np.ndarray, folder: str | Path, *, prefix: str = "frame", scale: int = 2) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(to_images(clip, scale)):
        paths.append(folder / f"{prefix}_{index:02d}.png")
        image.save(paths[-1])
    return paths


def filmstrip(clips: list[np.ndarray], *, every: int = 2, scale: int = 1) -> Image.Image:
    """Rows of clips (e.g. real above generated), every `every`-th frame side by side."""
    rows = [np.concatenate(list(np.asarray(c)[::every]), axis=1) for c in clips]
    return to_images(np.stack([np.concatenate(rows, axis=0)]), scale)[0]
