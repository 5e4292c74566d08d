"""Figures in the paper's style: PNG and PDF, labelled axes, legend, readable at column width."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .landscape import read_landscape  # noqa: E402


@dataclass(frozen=True)
class Style:
    """What a user tunes for a venue (config key `figures`); changing it redraws figures only."""

    width: float = 3.4  # inches: one column of a two-column paper
    height: float = 2.4  # inches, of one panel
    font_size: float = 8.0  # points; tick labels and legends one point smaller
    dpi: int = 300  # of the PNG (the PDF is vector)

    def rc(self) -> dict[str, float]:
        small = self.font_size - 1
        return {
            "font.size": self.font_size,
            "axes.labelsize": self.font_size,
            "legend.fontsize": small,
            "xtick.labelsize": small,
            "ytick.labelsize": small,
            "lines.linewidth": 1.2,
            "savefig.dpi": self.dpi,
        }


DEFAULT_STYLE = Style()


def save(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Write `out` (its suffix ignored) as .png and .pdf, each atomically."""
    out = Path(out)
    written = []
    for suffix in (".png", ".pdf"):
        path = out.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def parametric(
    landscape_file: str | Path, out: str | Path, style: Style = DEFAULT_STYLE
) -> list[Path]:
    """Figure 3 / 7: cross-entropy (left axis) and accuracy (right axis) along the curve,
    train solid and test dashed; α = 0 is the SB minimizer and α = 1 the LB one."""
    attrs, d = read_landscape(landscape_file)
    with plt.rc_context(style.rc()):
        fig, loss_ax = plt.subplots(figsize=(style.width, style.height))
        acc_ax = loss_ax.twinx()
        loss_ax.plot(d["alpha"], d["train_loss"], "b-")
        loss_ax.plot(d["alpha"], d["test_loss"], "b--")
        acc_ax.plot(d["alpha"], d["train_acc"], "r-")
        acc_ax.plot(d["alpha"], d["test_acc"], "r--")
        curve = "α" if attrs["kind"] == "linear" else "α (curvilinear)"
        loss_ax.set_xlabel(curve)
        loss_ax.set_ylabel("cross-entropy", color="b")
        acc_ax.set_ylabel("accuracy (%)", color="r")
        loss_ax.tick_params(axis="y", colors="b")
        acc_ax.tick_params(axis="y", colors="r")
        acc_ax.set_ylim(0, 100)
        loss_ax.set_ylim(bottom=0)
        for x, name in ((0, "SB"), (1, "LB")):
            loss_ax.axvline(x, color="0.6", lw=0.6, zorder=0)
            loss_ax.annotate(
                name,
                (x, 0),
                xycoords=("data", "axes fraction"),
                xytext=(2, 3),
                textcoords="offset points",
                fontsize=style.font_size - 1,
                color="0.4",
            )
        loss_ax.plot([], [], "k-", label="train")
        loss_ax.plot([], [], "k--", label="test")
        loss_ax.legend(loc="center left", frameon=False)
        loss_ax.set_title(f"{attrs['network']} ({attrs['dataset']}), trial {attrs['seed']}")
        loss_ax.grid(True, lw=0.3, alpha=0.5)
        return save(fig, out)
