"""Figures in the paper's style: PNG and PDF, labelled axes, legend, readable at column width."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed on clusters or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats  # noqa: E402

from ..atomic import atomic_path  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..guard import note_input  # noqa: E402
from ..settings import setting  # noqa: E402


@dataclass(frozen=True)
class Style:
    """What a user tunes for a venue (config key `figures`); changing it redraws figures only."""

    width: float = setting(3.4, "inches (one column of a two-column paper)")
    height: float = setting(2.4, "inches, of one panel")
    font_size: float = setting(8.0, "points; tick labels and legends one point smaller")
    dpi: int = setting(300, "of the PNG (the PDF is vector)")

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
    from ..measures.landscape import (
        read_landscape,  # here: it imports torch, which other figures skip
    )

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


# The command that writes each figure's CSV, where it is not `sharpminima measure NAME`.
WRITERS = {"directions": "directions", "trajectory": "trajectory", "panel": "panel",
           "density": "panel", "methods": "panel"}  # fmt: skip


def _table(csv: str | Path, name: str, columns: list[str]) -> pd.DataFrame:
    """The CSV `name`.csv of the command that writes it, or one UserError saying what it is not."""
    note_input(csv)
    try:
        d = pd.read_csv(csv)
    except (OSError, ValueError) as e:
        raise UserError(f"{csv} is not a readable CSV ({e})") from None
    missing = [c for c in columns if c not in d]
    if missing or d.empty:
        command = WRITERS.get(name, f"measure {name}")
        raise UserError(
            f"{csv} lacks {', '.join(missing) or 'rows'}: pass the {name}.csv of "
            f"`sharpminima {command}`"
        )
    return d


REGIME_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")


def accuracy_curves(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Figure 2: train (solid) and test (dashed) accuracy per epoch, one colour per regime,
    bands of ± one std over trials. Epoch 0 (chance accuracy at x₀) is left out: on the scale it
    needs, the gap between the regimes would vanish."""
    d = _table(csv, "curves", ["network", "dataset", "regime", "epoch", "train_mean", "test_std"])
    d = d[d.epoch > 0] if (d.epoch > 0).any() else d
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        for colour, (regime, r) in zip(
            REGIME_COLOURS, d.groupby("regime", sort=False), strict=False
        ):
            for split, line in (("train", "-"), ("test", "--")):
                mean, std = r[f"{split}_mean"], r[f"{split}_std"]
                ax.plot(r.epoch, mean, line, color=colour, label=f"{regime} {split}")
                ax.fill_between(r.epoch, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{d.network.iloc[0]} ({d.dataset.iloc[0]}), mean ± std over trials")
        ax.legend(frameon=False, ncol=2)
        ax.grid(True, lw=0.3, alpha=0.5)
        return save(fig, out)


def performance_model(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Appendix C: the largest I_ℓ/I_s for which LB is faster, against the small-batch parallel
    efficiency f_s(P), with our runs' measured I_ℓ/I_s (mean ± std over trials) across it."""
    from .experiments import lb_bound  # here, so that other figures do not execute it

    d = _table(csv, "iterations", ["network", "batch_s", "batch_l", "iter_ratio"])
    ratio = float((d.batch_s / d.batch_l).iloc[0])
    fs = np.linspace(0.02, 1, 200)
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        bound = lb_bound(fs, ratio)
        mean, std = d.iter_ratio.mean(), d.iter_ratio.std() if len(d) > 1 else 0.0
        bottom = min(bound.min(), mean - std, mean) / 3
        ax.fill_between(fs, bottom, bound, color="0.92", lw=0, label="LB faster")
        ax.plot(fs, bound, "k-", label=rf"bound $B_s/(f_s B_\ell)$, $B_s/B_\ell$ = {ratio:.3g}")
        ax.axhline(mean, color="tab:red", label=rf"measured $I_\ell/I_s$ ({len(d)} trials)")
        ax.axhspan(mean - std, mean + std, color="tab:red", alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom, bound.max())
        ax.set_xlabel(r"small-batch parallel efficiency $f_s(P)$")
        ax.set_ylabel(r"$I_\ell / I_s$")
        ax.set_title(f"{d.network.iloc[0]}: when LB pays off")
        ax.legend(frameon=False, loc="upper right")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        return save(fig, out)


def direction_rises(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """The rise of f along random directions as a fraction of the run's full-space φ, one box
    per regime (all trials' directions pooled): near 1, f rises in every direction; near 0, the
    steep ones are a small subspace that random directions miss."""
    d = _table(csv, "directions", ["network", "regime", "seed", "fraction_of_phi"])
    groups = list(d.groupby("regime", sort=False))
    flat = int((d.fraction_of_phi <= 0).sum())  # f fell: cannot sit on a log axis
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        rises = [g.fraction_of_phi[g.fraction_of_phi > 0] for _, g in groups]
        ax.boxplot(rises, whis=(5, 95), showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups])
        ax.axhline(1, color="tab:red", ls="--", lw=0.8, label="φ (the box's steepest point)")
        ax.set_yscale("log")
        ax.set_ylabel("rise along a random direction / φ")
        n = d.groupby(["regime", "seed"]).size().iloc[0]
        note = f"; {flat} non-positive left out" if flat else ""
        ax.set_title(f"{d.network.iloc[0]}: {n} directions per trial, 5–95%{note}")
        ax.legend(frameon=False, loc="center right")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        return save(fig, out)


def trajectory_sharpness(
    csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE
) -> list[Path]:
    """Figure 6: φ against the cross-entropy f(x) at the stored iterates of each run, one panel
    per BatchNorm mode. Both axes are logarithmic and the loss axis runs from high to low, so
    training reads left to right; the first and last epochs are labelled."""
    d = _table(csv, "trajectory", ["network", "regime", "run_seed", "bn", "epoch", "f_x", "phi"])
    modes = list(dict.fromkeys(d.bn))
    floor = d.phi[d.phi > 0].min() / 10 if (d.phi > 0).any() else 1e-6
    with plt.rc_context(style.rc()):
        fig, axes = plt.subplots(
            len(modes), 1, figsize=(style.width, style.height * len(modes)), squeeze=False
        )
        for ax, bn in zip(axes[:, 0], modes, strict=True):
            groups = d[d.bn == bn].groupby(["regime", "run_seed"], sort=False)
            for colour, ((regime, seed), r) in zip(REGIME_COLOURS, groups, strict=False):
                r = r.sort_values("epoch")
                phi = r.phi.clip(lower=floor)
                ax.plot(r.f_x, phi, "o-", color=colour, ms=2.5, label=f"{regime} (trial {seed})")
                for i in (0, -1):
                    ax.annotate(
                        f"{r.epoch.iloc[i]}",
                        (r.f_x.iloc[i], phi.iloc[i]),
                        xytext=(2, 3),
                        textcoords="offset points",
                        fontsize=style.font_size - 2,
                        color=colour,
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("cross-entropy f(x) on the training set")
            ax.set_ylabel(f"φ, ε = {d.eps.iloc[0]:g}")
            ax.set_title(f"{d.network.iloc[0]}: BatchNorm with {bn} statistics (labels: epochs)")
            ax.legend(frameon=False)
            ax.grid(True, which="both", lw=0.3, alpha=0.5)
        fig.tight_layout()
        return save(fig, out)


def _twin(ax: plt.Axes, left: str, right: str) -> plt.Axes:
    """A right-hand axis for φ beside `ax`'s accuracy, each labelled in its line's colour."""
    other = ax.twinx()
    ax.set_ylabel(left, color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    other.set_ylabel(right, color="tab:red")
    other.tick_params(axis="y", colors="tab:red")
    other.set_yscale("log")
    return other


def batch_sweep(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Figure 4: test accuracy (left) and φ (right, log) against the batch size (log), mean ±
    std over trials."""
    need = ["network", "batch_size", "stop", "epochs", "test_mean", "phi_mean", "phi_std", "eps"]
    d = _table(csv, "sweep", need)
    d = d.sort_values("batch_size")
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        phi_ax = _twin(ax, "test accuracy (%)", f"φ, ε = {d.eps.iloc[0]:g}")
        ax.errorbar(d.batch_size, d.test_mean, d.test_std, fmt="o-", color="tab:blue", ms=3,
                    capsize=2)  # fmt: skip
        phi_ax.errorbar(d.batch_size, d.phi_mean, d.phi_std, fmt="s--", color="tab:red", ms=3,
                        capsize=2)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(d.batch_size, [f"{b:,}" for b in d.batch_size])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("batch size")
        fixed = (d.stop == "fixed").all()
        budget = f"{d.epochs.max()} epochs each" if fixed else "trained until the loss stalls"
        ax.set_title(f"{d.network.iloc[0]}: {budget}, {d.trials.min()}+ trials per point")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        return save(fig, out)


def warm_start(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Figure 5: against the epoch the LB runs start from, the test accuracy of the SB iterate
    there and of the LB run's end (left), and the LB run's φ (right, log); trials averaged."""
    need = ["network", "warm_epoch", "sb_test_acc", "lb_test_acc", "lb_phi", "lb_epochs", "eps"]
    d = _table(csv, "warmstart", need)
    m = d.groupby("warm_epoch")[["sb_test_acc", "lb_test_acc", "lb_phi"]].mean().reset_index()
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        phi_ax = _twin(ax, "test accuracy (%)", f"LB φ, ε = {d.eps.iloc[0]:g}")
        ax.plot(m.warm_epoch, m.sb_test_acc, "-", color="tab:blue", label="SB iterate")
        ax.plot(m.warm_epoch, m.lb_test_acc, "o-", color="tab:blue", ms=3, mfc="none",
                label=f"LB after {d.lb_epochs.iloc[0]} more epochs")  # fmt: skip
        phi_ax.plot(m.warm_epoch, m.lb_phi, "s--", color="tab:red", ms=3, label="LB φ")
        later = m[m.warm_epoch > 0]
        if len(later):  # x₀'s chance accuracy would flatten the range that matters
            low = later[["sb_test_acc", "lb_test_acc"]].min().min()
            high = later[["sb_test_acc", "lb_test_acc"]].max().max()
            ax.set_ylim(low - 0.25 * (high - low + 1), high + 0.15 * (high - low + 1))
        ax.set_xlabel("SB epochs before switching to LB (SB at x₀: off scale)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{d.network.iloc[0]}: warm-started LB, {d.seed.nunique()} trial(s)")
        lines = ax.get_legend_handles_labels()
        extra = phi_ax.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], frameon=False, loc="best")
        ax.grid(True, lw=0.3, alpha=0.5)
        return save(fig, out)


def remedy_bars(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Appendix E: test accuracy (bars, mean ± std) of each regime under each remedy, and its φ
    (markers, right axis, log): a remedy that closes the gap but leaves LB's φ high is the
    paper's finding."""
    need = ["network", "remedy", "regime", "batch_size", "test_mean", "test_std", "phi_mean"]
    d = _table(csv, "remedies", need + ["eps"])
    methods = list(dict.fromkeys(d.remedy))
    regimes = list(dict.fromkeys(d.sort_values("batch_size").regime))
    width = 0.8 / len(regimes)
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        phi_ax = ax.twinx()
        phi_ax.set_yscale("log")
        for i, (colour, regime) in enumerate(zip(REGIME_COLOURS, regimes, strict=False)):
            r = d[d.regime == regime].set_index("remedy").reindex(methods)
            x = np.arange(len(methods)) + (i - (len(regimes) - 1) / 2) * width
            ax.bar(x, r.test_mean, width, yerr=r.test_std, color=colour, alpha=0.6,
                   label=f"{regime} test acc.", capsize=2)  # fmt: skip
            phi_ax.plot(x, r.phi_mean, "D", color=colour, ms=4, mec="k", mew=0.5,
                        label=f"{regime} φ")  # fmt: skip
        low = (d.test_mean - d.test_std).min()
        ax.set_ylim(max(0, low - (100 - low) * 0.5), min(100, d.test_mean.max() + 1))
        labels = [" + ".join(part.split(" ")[0] for part in m.split(" + ")) for m in methods]
        ax.set_xticks(np.arange(len(methods)), labels, rotation=20, ha="right")
        ax.set_ylabel("test accuracy (%)")
        phi_ax.set_ylabel(f"φ, ε = {d.eps.iloc[0]:g}")
        ax.set_title(f"{d.network.iloc[0]}: Appendix E remedies")
        bars, names = ax.get_legend_handles_labels()
        marks, more = phi_ax.get_legend_handles_labels()
        ax.legend(bars + marks, names + more, frameon=False, ncol=2, loc="lower left")
        ax.grid(True, axis="y", lw=0.3, alpha=0.5)
        return save(fig, out)


PANEL_LABELS = {
    "phi": "φ (Metric 2.1)",
    "eigenvalues": "λ_max",
    "trace": "tr H",
    "linf": "adaptive ℓ∞ worst case",
    "l2": "adaptive ℓ2 worst case",
    "average": "adaptive average case",
}


def _regime_colour(regime: str, sb: str, lb: str) -> str:
    return {sb: "tab:blue", lb: "tab:red"}.get(regime, "tab:gray")


def _power_of_ten(values: pd.Series) -> int:
    """The power of ten to divide `values` by so that a linear axis needs no offset text (which
    matplotlib draws over the axis label), or 0 where its tick labels are short already."""
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if len(finite) else 0.0
    if largest == 0:
        return 0
    power = int(np.floor(np.log10(largest)))
    return power if not -2 <= power <= 3 else 0


def panel_scatter(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Each measure (one panel each) against the generalization gap, one point per run: the
    study's first two regimes (SB, LB) in blue and red, every other run (sweep, warm starts,
    remedies) in grey, with Kendall's τ over all runs (its interval: verdict.csv). A measure
    that predicts the gap rises from left to right."""
    d = _table(csv, "panel", ["regime", "seed", "gap_acc"])
    measures = [m for m in PANEL_LABELS if m in d]
    if not measures:
        raise UserError(f"{csv} holds no measure: pass the panel.csv of `sharpminima panel`")
    sb, lb = (list(dict.fromkeys(d.regime)) + ["", ""])[:2]
    cols = min(3, len(measures))
    rows = -(-len(measures) // cols)
    with plt.rc_context(style.rc()):
        fig, axes = plt.subplots(
            rows, cols, figsize=(style.width * cols / 1.5, style.height * rows), squeeze=False
        )
        for ax, m in zip(axes.flat, measures, strict=False):
            colours = [_regime_colour(r, sb, lb) for r in d.regime]
            log = bool((d[m] > 0).all() and d[m].max() > 10 * d[m].min())
            power = 0 if log else _power_of_ten(d[m])
            ax.scatter(d[m] / 10.0**power, d.gap_acc, c=colours, s=10)
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            tau = stats.kendalltau(d[m], d.gap_acc).statistic if len(d) > 1 else np.nan
            ax.set_title(f"Kendall τ = {tau:.2f}", fontsize=style.font_size - 1)
            scale = f" (×10$^{{{power}}}$)" if power else ""
            ax.set_xlabel(PANEL_LABELS[m] + scale)
            ax.grid(True, lw=0.3, alpha=0.5)
        for ax in axes[:, 0]:
            ax.set_ylabel("train − test acc. (points)")
        for ax in list(axes.flat)[len(measures) :]:
            ax.set_visible(False)
        handles = [plt.Line2D([], [], marker="o", ls="", color=c) for c in ("tab:blue", "tab:red",
                   "tab:gray")]  # fmt: skip
        fig.legend(handles, [sb, lb, "other runs"], loc="upper center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 1.02))  # fmt: skip
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        return save(fig, out)


def method_bars(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """Each training method (remedies, the methods since the paper) against the plain runs:
    above, test accuracy (bars, mean ± std) per method at each batch regime, the plain SB runs'
    as a dashed line (a method that reaches it closes the gap); below, each measure of the
    large-batch runs (median over trials) relative to the plain large-batch runs' (log axis;
    below 1: flatter)."""
    d = _table(csv, "methods", ["method", "regime", "batch_size", "test_acc", "test_std"])
    pairs = zip(d.method, d.regime, strict=True)
    d["base"] = [r if m == "none" else r.rsplit("_", 1)[0] for m, r in pairs]
    bases = list(dict.fromkeys(d.base[d.method != "none"])) or list(dict.fromkeys(d.base))[:2]
    d = d[d.base.isin(bases)]
    bases = list(dict.fromkeys(d.sort_values("batch_size").base))
    methods = list(dict.fromkeys(d.method))
    measures = [m for m in PANEL_LABELS if m in d]
    width = 0.8 / len(bases)
    with plt.rc_context(style.rc()):
        # Wide enough for each method's name, wrapped, to sit under its bars unrotated
        fig_width = max(style.width * 1.4, 0.9 * len(methods))
        fig, (acc, rel) = plt.subplots(2, 1, figsize=(fig_width, style.height * 2), sharex=True)
        for i, (colour, base) in enumerate(zip(REGIME_COLOURS, bases, strict=False)):
            r = d[d.base == base].set_index("method").reindex(methods)
            x = np.arange(len(methods)) + (i - (len(bases) - 1) / 2) * width
            acc.bar(x, r.test_acc, width, yerr=r.test_std, color=colour, alpha=0.6,
                    label=base, capsize=2)  # fmt: skip
        plain = d[(d.method == "none") & (d.base == bases[0])].test_acc
        if len(plain):
            acc.axhline(plain.iloc[0], ls="--", lw=0.8, color="k", label=f"plain {bases[0]}")
        low = (d.test_acc - d.test_std).min()
        acc.set_ylim(max(0, low - (100 - low) * 0.5), min(100, d.test_acc.max() + 1))
        acc.set_ylabel("test accuracy (%)")
        acc.legend(frameon=False, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        acc.grid(True, axis="y", lw=0.3, alpha=0.5)
        large = d[d.base == bases[-1]].set_index("method").reindex(methods)
        reference = large.loc["none"] if "none" in large.index else None
        for k, m in enumerate(measures):
            if reference is None or not reference[m] > 0:
                continue
            rel.plot(np.arange(len(methods)) + (k - len(measures) / 2) * 0.05,
                     large[m] / reference[m], "o", ms=4, label=PANEL_LABELS[m])  # fmt: skip
        rel.axhline(1, ls="--", lw=0.8, color="k")
        rel.set_yscale("log")
        rel.set_ylabel(f"{bases[-1]}: measure / plain {bases[-1]}")
        if measures and reference is not None:
            rel.legend(frameon=False, ncol=2, fontsize=style.font_size - 1)
        rel.grid(True, lw=0.3, alpha=0.5)
        # A method's name lists its settings ("linear lr scaling + warm-up 5 ep + SGD"): wrapped
        names = [textwrap.fill("plain" if m == "none" else m, 12) for m in methods]
        rel.set_xticks(np.arange(len(methods)), names, fontsize=style.font_size - 1)
        fig.tight_layout()
        return save(fig, out)


def spectral_density(csv: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """The Hessian's smoothed spectral density (log scale) against λ, one line per run: the
    study's first regime (SB) blue, the second (LB) red."""
    d = _table(csv, "density", ["regime", "seed", "eigenvalue", "density"])
    sb, lb = (list(dict.fromkeys(d.regime)) + ["", ""])[:2]
    with plt.rc_context(style.rc()):
        fig, ax = plt.subplots(figsize=(style.width, style.height))
        floor = d.density.max() * 1e-8  # eight decades: below, the kernels' tails only
        for (regime, seed), line in d.groupby(["regime", "seed"], sort=False):
            colour = _regime_colour(regime, sb, lb)
            label = f"{regime} trial {seed}"
            ax.semilogy(line.eigenvalue, line.density.clip(floor), color=colour, label=label)
        ax.set_ylim(floor, d.density.max() * 2)
        ax.set_xlabel("eigenvalue λ of the Hessian")
        ax.set_ylabel("density (σ = 1% of the span)")
        ax.legend()
        ax.grid(True, lw=0.3, alpha=0.5)
        return save(fig, out)


def loss_surface(h5: str | Path, out: str | Path, style: Style = DEFAULT_STYLE) -> list[Path]:
    """A filter-normalised surface (Li et al., 2018) around one minimizer: training loss along
    one direction (1-D), or as a contour map beside a 3-D view (2-D), on a log scale."""
    from ..measures.surface import read_surface  # here: it imports torch, which other figures skip

    attrs, d = read_surface(h5)
    loss = np.maximum(d["train_loss"], 1e-12)
    title = f"{attrs['network']} {attrs['regime']}, trial {attrs['run_seed']}"
    with plt.rc_context(style.rc()):
        if len(d["beta"]) == 1:
            fig, ax = plt.subplots(figsize=(style.width, style.height))
            ax.semilogy(d["alpha"], loss[:, 0], "b-")
            ax.set_xlabel("α (filter-normalised direction)")
            ax.set_ylabel("training loss")
            ax.grid(True, lw=0.3, alpha=0.5)
            ax.set_title(title)
            return save(fig, out)
        fig = plt.figure(figsize=(2 * style.width, style.height * 1.3))
        ax = fig.add_subplot(1, 2, 1)
        a, b = np.meshgrid(d["alpha"], d["beta"], indexing="ij")
        levels = np.geomspace(loss.min(), loss.max(), 12) if loss.max() > loss.min() else 12
        contour = ax.contour(a, b, loss, levels=levels, cmap="viridis",
                             norm=matplotlib.colors.LogNorm())  # fmt: skip
        ax.clabel(contour, contour.levels[::2], fontsize=style.font_size - 2, fmt="%.2g")
        ax.plot(0, 0, "r*")
        ax.set_aspect("equal")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_title(title)
        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        ax3.plot_surface(a, b, np.log10(loss), cmap="viridis", linewidth=0)
        ax3.set_xlabel("α")
        ax3.set_ylabel("β")
        ax3.set_zlabel("log10 training loss")
        return save(fig, out)
