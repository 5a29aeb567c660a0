"""Pictures people would rather see than read: instance overlays. Agg backend, PNG next to the run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import atomic_path


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB uint8 image with each instance tinted in its own colour and its contour drawn in white."""
    from skimage.segmentation import find_boundaries

    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.float32)
    rng = np.random.default_rng(0)
    palette = rng.integers(40, 256, size=(int(labels.max()) + 1, 3)).astype(np.float32)
    inside = labels > 0
    rgb[inside] = (1 - alpha) * rgb[inside] + alpha * palette[labels[inside]]
    rgb[find_boundaries(labels, mode="inner")] = 255.0
    return rgb.clip(0, 255).astype(np.uint8)


def save_overlays(path: str | Path, image: np.ndarray, panels: dict[str, np.ndarray]) -> Path:
    """One PNG with the image overlaid by each named label image side by side (e.g. truth | prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, (title, labels) in zip(axes[0], panels.items()):
        ax.imshow(overlay(image, labels))
        ax.set_title(f"{title}: {len(np.unique(labels[labels > 0]))} instances")
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)
