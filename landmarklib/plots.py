"""Figures for the notebooks: landmarks on images, training curves, per-part errors, ablations,
annotation scores. Each function returns a matplotlib Figure; the notebooks only show them."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogFormatter, MaxNLocator

from .images import open_image
from .layout import PART_COLOURS, PARTS, part_of_points
from .metric import point_error

_PART = part_of_points()


def draw_landmarks(ax, image, points: np.ndarray | None = None, truth: np.ndarray | None = None, title: str = "",
                   size: float = 2.0) -> None:
    """Image with points coloured by face part; `truth` (optional) in white underneath."""
    ax.imshow(image)
    if truth is not None:
        ax.scatter(truth[:, 0], truth[:, 1], s=size, c="white", linewidths=0)
    if points is not None:
        colours = [PART_COLOURS[p] for p in _PART]
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def landmark_grid(image_paths: list, points: list, truths: list | None = None, titles: list | None = None,
                  cols: int = 4) -> plt.Figure:
    n = len(image_paths)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.5 * rows + 0.3), squeeze=False)   # 1,000 px wide
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        with open_image(image_paths[i]) as im:   # upright, as the labels see it
            img = im.convert("RGB")
        draw_landmarks(ax, img, points[i], truths[i] if truths else None, titles[i] if titles else "")
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=p) for p, c in PART_COLOURS.items()]
    if truths:
        handles.append(plt.Line2D([], [], marker="o", ls="", color="white", markeredgecolor="grey", label="truth"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _log_y(ax) -> None:
    """A log y axis labelled in plain numbers (20, 30, 200), not 2×10^1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def plot_history(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Train loss, LR and validation MSE (original pixels) per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))   # 1,000 px: Colab shows it without shrinking
    axes[0].plot(history["epoch"], history["train_loss"], "o-")
    axes[0].set(title="train loss (normalized coordinates)", xlabel="epoch")
    axes[1].plot(history["epoch"], history["lr"], "o-", color="tab:orange")
    axes[1].set(title="learning rate", xlabel="epoch")
    axes[2].plot(history["epoch"], history["val_mse_px"], "o-", label="all 971 points")
    axes[2].plot(history["epoch"], history["val_mse30_px"], "s--", label="30 random points (contest)")
    axes[2].set(title="validation MSE (px², original image)", xlabel="epoch")
    for ax in axes:
        _log_y(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(11)
    axes[2].legend(fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def error_by_part(pred: np.ndarray, truth: np.ndarray) -> pd.Series:
    """The contest MSE (original pixels) of each face part's points, mean over images."""
    err = point_error(pred, truth).mean(0)       # (971,)
    return pd.Series({p: float(err[_PART == p].mean()) for p in PARTS})


def plot_error_by_part(err: pd.Series) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(err.index, err.values, color=[PART_COLOURS[p] for p in err.index])
    ax.set(ylabel="MSE, px² (original image)", title="validation error per face part")
    fig.tight_layout()
    return fig


def plot_ablation(curves: dict[str, list[pd.DataFrame]], drops: dict[str, list[int]], title: str,
                  metric: str = "val_mse_px") -> plt.Figure:
    """Left: validation MSE per epoch, one line per configuration (mean over seeds, band = min..max),
    drop epochs marked. Right: final MSE per configuration, each seed a dot, bar = mean."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.5, 1]})
    finals = {}
    for i, (label, runs) in enumerate(curves.items()):
        colour = f"C{i}"
        table = pd.concat([r.set_index("epoch")[metric] for r in runs], axis=1)
        ax.plot(table.index, table.mean(axis=1), "o-", color=colour, label=label, ms=3)
        if table.shape[1] > 1:
            ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=colour, alpha=0.15)
        for e in drops.get(label, []):
            if e in table.index or e + 1 in table.index:
                y = table.mean(axis=1).get(e + 1, table.mean(axis=1).iloc[-1])
                ax.annotate("", xy=(e + 0.5, y), xytext=(e + 0.5, y * 1.6), color=colour,
                            arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.5, "mutation_scale": 12})
        finals[label] = table.iloc[-1].to_numpy()
    ax.set(xlabel="epoch", ylabel="validation MSE, px² (log)", title="validation MSE per epoch (arrows: LR drops)")
    _log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=9)
    labels = list(finals)
    means = [finals[k].mean() for k in labels]
    bx.barh(labels, means, color=[f"C{i}" for i in range(len(labels))], alpha=0.5)
    for i, k in enumerate(labels):
        bx.scatter(finals[k], [i] * len(finals[k]), color="black", s=12, zorder=3)
        bx.text(max(means[i], finals[k].max()), i, f"  {means[i]:.1f}", va="center", fontsize=9)
    log = max(means) > 100 * min(means)   # a diverged arm (1e7 beside 20) flattens a linear axis
    bx.set(xlabel="final validation MSE, px²" + (" (log)" if log else ""),
           xscale="log" if log else "linear", title="final MSE (dots: seeds)")
    bx.margins(x=0.15)
    bx.invert_yaxis()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_runs(histories: dict[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """The validation curves of several runs on one axis (the runs table's best, in its order)."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, h in histories.items():   # a long name's end tells runs apart (seed, blocklist, ...)
        label = f"{h['val_mse_px'].min():.1f}  " + (name if len(name) <= 80 else "…" + name[-79:])
        ax.plot(h["epoch"], h["val_mse_px"], "o-", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="validation MSE, px² (log)", title=title or "validation MSE per epoch")
    _log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False,   # long names: below
              title="best validation MSE, run", title_fontsize=9)
    fig.tight_layout()
    return fig


def plot_score_histogram(df: pd.DataFrame) -> plt.Figure:
    """score_annotations' scores (each row's worst stage, in multiples of that stage's threshold; log
    counts; flagged past 1). Rows a pass/fail rule flagged have no such measure: they are counted in
    the title, not drawn. Beside the axes, each scored stage's threshold in robust z."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    rule = df["rule"] if "rule" in df else pd.Series(False, index=df.index)
    scores = df.loc[~rule, "score"].clip(lower=-0.5, upper=20)
    ax.hist(scores, bins=80, color="tab:blue")
    ax.axvline(1, color="red", ls="--", label="threshold (1)")
    ax.set_xlim(right=max(2.0, scores.max() * 1.05 if len(scores) else 0))   # the threshold never at the edge
    flagged, by_rule = int(df["flagged"].sum()), int((df["flagged"] & rule).sum())
    ax.set(yscale="log", xlabel="score: robust z in multiples of its stage's threshold (clipped to 20)",
           ylabel="images", title=f"{flagged} of {len(df)} labels flagged" + (f", {by_rule} of them by a failed rule"
                                                                             if by_rule else ""))
    stages = [(n, t) for n, t in df.attrs.get("thresholds", {}).items() if n not in df.attrs.get("rules", ())]
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9,
              title="robust z at the threshold\n" + "\n".join(f"{n}: {t:.1f}" for n, t in stages) if stages else None,
              title_fontsize=9, alignment="left")
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
