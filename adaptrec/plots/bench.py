"""Latency and throughput bars from bench/results/*.json: a panel per measurement, adaptrec beside the baseline of
the same run, with the benchmark's target as a dashed line."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .inputs import ResultFileError, fields_of, load_json
from .style import COLORS, new_figure, save_png, styled

WHAT = "benchmark result"
TITLE_CHARS = 72  # a panel title's line beside the category labels
LEGEND_CHARS = 88  # a legend line (smaller type) as wide as a title's
BACKEND_NAMES = {"fp32": "fp32", "bitsandbytes": "bitsandbytes int8", "torch-int8": "adaptrec int8",
                 "torchao": "torchao int8", "quantize_dynamic": "quantize_dynamic"}


@dataclass(frozen=True)
class BarPanel:
    """One measurement: a value per category and series (None: not measured) in `unit`; one unnamed series
    ("") draws no legend."""

    title: str
    unit: str
    categories: tuple[str, ...]
    series: Mapping[str, tuple[float | None, ...]]
    target: float | None = None
    target_label: str = ""
    log: bool = False

    @property
    def bars(self) -> int:
        return sum(v is not None for values in self.series.values() for v in values)


def _train_throughput(r: dict) -> list[BarPanel]:
    c, trainer, ratio = r["config"], r["transformers_trainer"]["tokens_per_s"], r["target_ratio"]
    return [BarPanel(f"Training, {c['steps']} steps of batch {c['batch_size']} on {c['data']}",
                     "prompt tokens/s, higher is better", ("adaptrec loop", "transformers Trainer"),
                     {"": (r["adaptrec"]["tokens_per_s"], trainer)}, trainer * ratio, f"target: ≥ {ratio:g}× Trainer")]


def _prompts_per_s(backend: Mapping, kind: str) -> float | None:
    """A backend variant's speed; None where it was not measured or the benchmark skipped it."""
    v = backend.get(kind)
    return None if v is None or "skipped" in v else v["prompts_per_s"]


def _quant_backends(r: dict) -> list[BarPanel]:
    b, c, ratio = r["backends"], r["config"], r["target_ratio"]
    names = [n for n in BACKEND_NAMES if n in b and any(_prompts_per_s(b[n], k) is not None for k in ("bare", "lora"))]
    series = {label: tuple(_prompts_per_s(b[name], kind) for name in names)
              for kind, label in (("bare", "bare backbone"), ("lora", "with LoRA"))}
    return [BarPanel(f"Scoring {c['timed_prompts']} prompts (mean {c['mean_prompt_tokens']:.0f} tokens), batches of "
                     f"{c['batch_size']}, median of {c['repeats']} repeats", "prompts/s, higher is better",
                     tuple(BACKEND_NAMES[n] for n in names), series, b["fp32"]["lora"]["prompts_per_s"] * ratio,
                     f"target, adaptrec int8 with LoRA: ≥ {ratio:g}× fp32")]


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def _swap_latency(r: dict) -> list[BarPanel]:
    rows, ratio, c = r["rows"], r["target_ratio"], r["config"]
    targets = tuple("/".join(t.removesuffix("_proj") for t in row["targets"]) + " targets" for row in rows)
    request = {"peft set_adapter + forward": tuple(row["peft_request_ms"] for row in rows),
               "adaptrec engine": tuple(row["engine_request_ms"] for row in rows)}
    selection = {"peft set_adapter": tuple(row["peft_set_adapter_ms"] for row in rows),
                 "adaptrec engine": tuple(row["engine_switch_ms"] for row in rows)}
    return [BarPanel(f"A request among {c['adapters']} adapters: switch + forward of {c['request_batch']} prompts "
                     f"(target: the median of the repeats' ratios ≥ {ratio:g}× peft, the lower target set; it is "
                     f"{r['ratio']:.2f}×: {_verdict(r['ratio'] >= ratio)}); the bars are each arm's median",
                     "ms per request, lower is better", targets, request),
            BarPanel("Selecting the adapter alone, outside the forward (bookkeeping; no target)",
                     "ms per switch (log scale), lower is better", targets, selection, log=True)]


def _mixed_batch(r: dict) -> list[BarPanel]:
    c, single, ratio = r["config"], r["single_adapter_prompts_per_s"], r["target_ratio"]
    return [BarPanel(f"A batch of {c['batch_size']} ({c['data']}) on one adapter or mixed over {c['adapters']}",
                     "prompts/s, higher is better", ("one adapter", f"{c['adapters']} adapters mixed"),
                     {"": (single, r["mixed_4_adapter_prompts_per_s"])}, single * ratio,
                     f"target: the median of the repeats' paired ratios ≥ {ratio:g}× one adapter (it is "
                     f"{r['ratio']:.3f}: {_verdict(r['ratio'] >= ratio)}); the bars are each arm's median")]


def _prefix_ranking(r: dict) -> list[BarPanel]:
    c, full, ratio = r["config"], r["full_prompts_s"], r["target_ratio"]
    return [BarPanel(f"Ranking {c['candidates']} candidates for each of {c['users']} users ({c['data']})",
                     "seconds, lower is better", ("full prompts", "shared history prefix"),
                     {"": (full, r["shared_prefix_s"])}, full / ratio,
                     f"target: ≥ {ratio:g}× faster than full prompts")]


def _serve_load(r: dict) -> list[BarPanel]:
    c, t, repeats = r["config"], r["target"], r["repeats"]  # each repeat's ratios: served ÷ direct, as targeted
    many = [rep[f"{c['clients']}_clients"] for rep in repeats]
    one = [rep["1_client"] for rep in repeats]
    labels = tuple(f"repeat {i}" for i in range(1, len(repeats) + 1))
    low, median, cap = t["min_throughput_ratio"], t["median_throughput_ratio"], t["max_latency_ratio_1_client"]
    middle = statistics.median(rep["throughput_ratio"] for rep in repeats)
    return [BarPanel(f"Throughput: {c['requests']} requests a repeat from {c['clients']} clients at once, "
                     f"{sum(m['errors'] for m in many)} errors", "adaptrec serve ÷ the engine called directly, "
                     "requests/s (higher is better)", labels,
                     {"": tuple(rep["throughput_ratio"] for rep in repeats)},
                     low, f"target: each repeat ≥ {low:g}× (the line), their median ≥ {median:g}× (it is "
                     f"{middle:.3f}: {_verdict(middle >= median)})"),
            BarPanel(f"Latency, one client: {c['requests']} requests a repeat, {sum(o['errors'] for o in one)} errors",
                     "adaptrec serve ÷ the engine called directly, mean seconds per request (lower is better)",
                     labels, {"": tuple(rep["latency_ratio_1_client"] for rep in repeats)},
                     cap, f"target: each repeat ≤ {cap:g}×")]


def _many_adapters(r: dict) -> list[BarPanel]:
    c, one, zipf, e, ratio = r["config"], r["one_adapter"], r["many_adapters"], r["engine_load"], r["target_ratio"]
    runs = ("one adapter", f"Zipf α {c['alpha']:g}, {c['adapters']} adapters, {c['resident_cap']} resident")
    return [BarPanel(f"Throughput: {c['requests']} requests from {c['clients']} clients, naming one adapter or "
                     f"{zipf['distinct_adapters']} distinct ones", "requests/s, higher is better", runs,
                     {"": (one["requests_per_s"], zipf["requests_per_s"])}, one["requests_per_s"] * ratio,
                     f"target: ≥ {ratio:g}× one adapter"),
            BarPanel("Latency of a served request", "seconds, lower is better", runs,
                     {"p50": (one["p50_s"], zipf["p50_s"]), "p99": (one["p99_s"], zipf["p99_s"])}),
            BarPanel(f"Per adapter: registering (mean of {c['adapters']}), loading and unloading (mean of "
                     f"{e['adapters']})", "ms per adapter (log scale), lower is better",
                     ("Registry.register", "Engine.load (verify + attach)", "hash + fingerprint check alone",
                      "Engine.unload"),
                     {"": (r["registration_ms_per_adapter"], e["load_ms"]["mean"], e["verify_ms"]["mean"],
                           e["unload_ms"]["mean"])}, log=True)]


PANELS: dict[str, Callable[[dict], list[BarPanel]]] = {
    "train_throughput": _train_throughput, "quant_backends": _quant_backends, "swap_latency": _swap_latency,
    "mixed_batch": _mixed_batch, "prefix_ranking": _prefix_ranking, "serve_load": _serve_load,
    "many_adapters": _many_adapters}  # serve_soak: a table only (docs/performance.md)


def machine_line(m: Mapping) -> str:
    """`2 CPU cores, torch 2.13.0+cpu, 2 threads`, led by the GPU and processor when recorded."""
    cpu = m.get("cpu", m.get("processor"))  # older result files name it `processor`
    return ", ".join(str(p) for p in (m.get("cuda"), cpu, f"{m['cpu_count']} CPU cores", f"torch {m['torch']}",
                                      f"{m['threads']} threads") if p)


def read_bench(sources: Sequence[Path]) -> tuple[list[BarPanel], list[str], list[str]]:
    """(the panels of the benchmark JSONs `sources` names, the machines they ran on, the files of a folder skipped
    because their benchmark has no bars here); a file named itself must have bars."""
    named = [(Path(s), False) for s in sources if not Path(s).is_dir()]
    found = [(f, True) for s in sources if Path(s).is_dir() for f in sorted(Path(s).glob("*.json"))]
    panels, machines, skipped = [], [], []
    for path, in_folder in named + found:
        doc = load_json(path, WHAT)
        with fields_of(path, WHAT):
            draw = PANELS.get(doc["benchmark"])
            if draw is not None:
                panels += draw(doc)
                machines.append(machine_line(doc["machine"]))
        if draw is None and not in_folder:
            raise ResultFileError(f"{path}: benchmark {doc['benchmark']!r} has no bars to draw "
                                  f"(known: {', '.join(PANELS)})")
        if draw is None:
            skipped.append(path.name)
    if not panels:
        raise ResultFileError(f"no {WHAT} with bars to draw in {', '.join(map(str, sources))}")
    return panels, list(dict.fromkeys(machines)), skipped


def _target_label(panel: BarPanel) -> str:
    """The target's legend entry, wrapped to what the series' entries beside it leave of the panel's width (was: one
    line running off the figure)."""
    beside = sum(len(name) + 8 for name in panel.series if name)  # an entry: its handle, its text, the gap
    return textwrap.fill(panel.target_label, max(LEGEND_CHARS - beside, 32))


def _legend_lines(panel: BarPanel) -> int:
    """How many lines the panel's legend row takes."""
    return _target_label(panel).count("\n") + 1 if panel.target is not None else 1


def _bars(ax: Axes, panel: BarPanel) -> None:
    """Horizontal bars, a group per category, each labelled with its value."""
    height = 0.8 / len(panel.series)
    for k, (name, values) in enumerate(panel.series.items()):
        shown = [(i + (k - (len(panel.series) - 1) / 2) * height, v) for i, v in enumerate(values) if v is not None]
        if not shown:  # a series with nothing measured keeps its colour, draws no bars
            continue
        bars = ax.barh(*zip(*shown), height=0.9 * height, color=COLORS[k % len(COLORS)], label=name or "_values")
        ax.bar_label(bars, fmt="%.3g", padding=2, fontsize=7)
    if panel.target is not None:
        ax.axvline(panel.target, color="black", ls="--", lw=1.1, label=_target_label(panel))
    ax.set_yticks(range(len(panel.categories)), panel.categories)
    ax.invert_yaxis()
    ax.set_xscale("log" if panel.log else "linear")
    if panel.log:  # within a decade or two matplotlib labels the minor ticks too, over one another
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.12)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(panel.unit)
    labelled = len(ax.get_legend_handles_labels()[0])
    if labelled:  # a row between the title and the bars
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=labelled, fontsize=7, borderaxespad=0.1)
    ax.set_title(textwrap.fill(panel.title, TITLE_CHARS), loc="left",
                 pad=14 + 9 * (_legend_lines(panel) - 1) if labelled else 6)


@styled
def plot_bench(panels: Sequence[BarPanel], out: Path, *, title: str | None = None, subtitle: str = "",
               caption: str = "") -> Figure:
    """The panels stacked, each as tall as its bars need."""
    heights = [0.8 + 0.2 * p.bars + 0.1 * len(p.categories) + 0.15 * (p.target is not None or len(p.series) > 1)
               + 0.13 * (_legend_lines(p) - 1) for p in panels]
    fig, axes = new_figure(1.1 + sum(heights), len(panels), 1, gridspec_kw={"height_ratios": heights},
                           title=title or "Benchmarks: adaptrec against the baseline of the same run",
                           subtitle=subtitle, caption=caption)
    for ax, panel in zip(axes[:, 0], panels):
        _bars(ax, panel)
    save_png(fig, out)
    return fig


def from_files(sources: Sequence[Path], out: Path, *, title: str | None = None, subtitle: str = "") -> Path:
    """Bars of the benchmark JSONs `sources` (files or folders of them) into the PNG `out`."""
    panels, machines, skipped = read_bench(sources)
    caption = (f"Measured on {'; '.join(machines)}. Each bar: the value the benchmark recorded; dashed: its target "
               "(a ratio to the same run's baseline, or a limit)."
               + (f" Not drawn (no bars for their benchmark): {', '.join(skipped)}." if skipped else ""))
    plot_bench(panels, out, title=title, subtitle=subtitle, caption=caption)
    return out
