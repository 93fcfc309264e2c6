"""One shared look for every figure, and deterministic files (no timestamps or software versions inside)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

OPTIMIZER_LABELS = {"gd": "GD", "sgd": "SGD", "sam": "SAM"}
PALETTE = {"gd": "#c0392b", "sgd": "#c0392b", "sam": "#1f5fa8"}
HEATMAP_CMAP = "rocket_r"


def apply_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.titleweight": "bold",
                         "svg.hashsalt": "sam-unlearning", "pdf.compression": 6})


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` with fixed metadata, so re-rendering the same data gives the same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"Creator": None, "Producer": None,
                                                               "CreationDate": None})):
        path = out_dir / f"{name}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, metadata=metadata, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths
