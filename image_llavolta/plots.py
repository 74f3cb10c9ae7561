"""PNG plots of the redundancy probe (`image_llavolta.probe`): matplotlib is an optional extra.

    pip install -e .[plot]

Without matplotlib the probe still writes its JSON; `save_plots` then prints one line saying how to get the plots.
matplotlib is imported inside the functions, and figures are drawn on `matplotlib.figure.Figure` directly, so no
global backend or pyplot state is touched.
"""

from __future__ import annotations

import os
import sys

PLOT_HINT = "no PNG plots: matplotlib is not installed (the JSON is written); for the plots: pip install -e .[plot]"


def _ok_points(sweep: dict) -> list[dict]:
    return [p for p in sweep.get("points", []) if p.get("status") == "ok" and p.get("accuracy") is not None]


def sweep_figure(sweep: dict, lines_per: str = "layer"):
    """Accuracy (%) against visual tokens kept (%): one line per K (`lines_per="layer"`) or per S, stock starred."""
    from matplotlib.figure import Figure

    if lines_per not in ("layer", "stride"):
        raise ValueError(f"lines_per must be 'layer' or 'stride', got {lines_per!r}")
    other = "stride" if lines_per == "layer" else "layer"
    letter = {"layer": "K", "stride": "S"}
    points = _ok_points(sweep)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for key in sorted({p[lines_per] for p in points if not p["stock"]}):
        line = sorted((p for p in points if not p["stock"] and p[lines_per] == key), key=lambda p: p["share_kept"])
        xs, ys = [100 * p["share_kept"] for p in line], [100 * p["accuracy"] for p in line]
        ax.plot(xs, ys, marker="o", label=f"{letter[lines_per]}={key}")
        for p, x, y in zip(line, xs, ys):
            ax.annotate(f"{letter[other]}={p[other]}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    stock = [p for p in points if p["stock"]]
    if stock:
        y = 100 * stock[0]["accuracy"]
        ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
        ax.scatter([100.0], [y], marker="*", s=160, color="black", zorder=3, label="stock (no compression)")
    if not points:
        ax.text(0.5, 0.5, "no finished sweep points", transform=ax.transAxes, ha="center")
    ax.set_xlabel("visual tokens kept over all layers (%) = 100 / CR")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("test-time pooling: accuracy vs visual tokens kept")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    return fig


def attention_figure(profile: dict):
    """Per decoder layer: the answer position's attention mass on visual vs system tokens, and per token."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = profile["layers"]
    layers = [r["layer"] for r in rows]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    mass, dense = fig.subplots(1, 2)
    styles = {
        "visual": dict(color="tab:blue", marker="o"),
        "system": dict(color="tab:orange", marker="s"),
        "bos": dict(color="grey", linestyle=":"),
        "rest": dict(color="tab:green", linestyle="--"),
    }
    labels = {"visual": "visual tokens", "system": "system-prompt tokens", "bos": "BOS", "rest": "other text"}
    for name, style in styles.items():
        if rows and f"{name}_mass" in rows[0]:
            mass.plot(layers, [r[f"{name}_mass"] for r in rows], label=labels[name], **style)
    for name in ("visual", "system"):
        values = [r.get(f"{name}_per_token") for r in rows]
        if any(v is not None for v in values):
            dense.plot(layers, [float("nan") if v is None else v for v in values], label=labels[name], **styles[name])
    mass.set_title("attention mass from the answer position")
    mass.set_ylabel("share of attention (mean over heads, samples)")
    dense.set_title("attention per token")
    dense.set_ylabel("mean attention per token")
    dense.set_yscale("log")
    for ax in (mass, dense):
        ax.set_xlabel("decoder layer (0-based)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(f"answer position = last prompt token; {profile.get('samples', '?')} samples")
    return fig


def plot_sweep(sweep: dict, path: str | os.PathLike, lines_per: str = "layer") -> str:
    """Write the sweep plot as PNG; ImportError when matplotlib is missing."""
    sweep_figure(sweep, lines_per).savefig(os.fspath(path), dpi=120)
    return os.fspath(path)


def plot_attention(profile: dict, path: str | os.PathLike) -> str:
    """Write the attention plot as PNG; ImportError when matplotlib is missing."""
    attention_figure(profile).savefig(os.fspath(path), dpi=120)
    return os.fspath(path)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported."""
    import importlib

    try:
        importlib.import_module("matplotlib")
    except ImportError:  # absent, or installed without its dependencies
        return False
    return True


def save_plots(
    out_dir: str | os.PathLike,
    sweep: dict | None = None,
    attention: dict | None = None,
    lines_per: str = "layer",
    file=None,
) -> dict[str, str | None]:
    """Draw `sweep.png` / `attention.png` in `out_dir` for what is given; without matplotlib print PLOT_HINT once."""
    wanted = {"sweep": sweep, "attention": attention}
    written = {name: None for name, data in wanted.items() if data is not None}
    if not written:
        return written
    if not matplotlib_available():
        print(PLOT_HINT, file=file or sys.stdout)
        return written
    os.makedirs(out_dir, exist_ok=True)
    if sweep is not None:
        written["sweep"] = plot_sweep(sweep, os.path.join(out_dir, "sweep.png"), lines_per)
    if attention is not None:
        written["attention"] = plot_attention(attention, os.path.join(out_dir, "attention.png"))
    return written
