"""PNG pictures of the forensic figures, drawn from a figure's JSON data with matplotlib's Agg
renderer (no display, no pyplot state: a Figure per request is safe in threads)."""

import io

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 9, 4.8, 100
LABELS = {"turnout": "Turnout, %", "leader_result": "Leader's result, %"}


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def histogram_png(data: dict, title: str) -> bytes:
    centers = np.array([b["center"] for b in data["bins"]])
    stations = np.array([b["stations"] for b in data["bins"]])
    figure = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
    axes = figure.subplots()
    axes.fill_between(centers, stations, step="mid", color="#1f5f99", linewidth=0)
    axes.set_xlim(0, 100)
    axes.set_ylim(bottom=0)
    axes.set_xlabel(LABELS[data["of"]])
    axes.set_ylabel(f"Polling stations per {data['bin']:g} pp bin")
    axes.set_title(f"{title}: {LABELS[data['of']].split(',')[0].lower()} ({data['stations']:,} stations)")
    axes.grid(axis="x", color="#dddddd", linewidth=0.5)
    axes.set_xticks(range(0, 101, 10))
    return _png(figure)


def fingerprint_png(data: dict, title: str) -> bytes:
    width = data["bin"]
    steps = round(100 / width)
    grid = np.zeros((steps + 1, steps + 1))
    for cell in data["cells"]:
        grid[round(cell["leader_result"] / width), round(cell["turnout"] / width)] = cell["voters"]
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    axes = figure.subplots()
    extent = (-width / 2, 100 + width / 2, -width / 2, 100 + width / 2)
    positive = grid[grid > 0]
    norm = LogNorm(vmin=max(positive.min(), 1), vmax=positive.max()) if positive.size else None
    image = axes.imshow(
        np.ma.masked_equal(grid, 0), origin="lower", extent=extent, cmap="viridis", norm=norm, aspect="equal"
    )
    figure.colorbar(image, ax=axes, label="Registered voters per cell")
    axes.set_facecolor("#f4f4f4")
    axes.set_xlabel(LABELS["turnout"])
    axes.set_ylabel(LABELS["leader_result"])
    axes.set_title(f"{title}: fingerprint ({width:g} pp cells)")
    return _png(figure)


def integer_excess_png(data: dict, title: str) -> bytes:
    figure = Figure(figsize=(WIDTH, HEIGHT), layout="constrained")
    axes = figure.subplots()
    either = data["either"]
    percents = [p["percent"] for p in either["per_integer"]]
    axes.bar(
        percents,
        [p["observed"] for p in either["per_integer"]],
        width=0.8,
        color="#c0392b",
        label="observed: turnout or result within ±0.05 pp of the integer",
    )
    axes.plot(
        percents,
        [p["expected"] for p in either["per_integer"]],
        color="#222222",
        linewidth=1.2,
        label=f"expected under binomial resampling ({data['reps']} repetitions, seed {data['seed']})",
    )
    axes.set_xlim(-1, 101)
    axes.set_xlabel("Integer percentage")
    axes.set_ylabel("Polling stations")
    axes.set_title(
        f"{title}: integer percentages, observed {either['observed']:,} vs expected "
        f"{either['expected']:,.0f} (excess {either['excess']:,.0f} of {data['stations']:,} stations)",
        fontsize=10,
    )
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    axes.set_xticks(range(0, 101, 10))
    return _png(figure)
