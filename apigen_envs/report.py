"""Reports people can look at: a pass^k curve (PNG) and a self-contained HTML page.

The HTML page holds the metrics, an inline SVG pass^k curve, the per-task table, and a browser of every
episode (conversation, tool calls and results, the episode's DB diff beside the gold diff). It needs no
server or network. Model-written text is inserted with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from apigen_envs.episode import Episode
from apigen_envs.metrics import Summary, label_of, partial_credit

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


def svg_curve(summaries: Sequence[Summary], *, width: int = 560, height: int = 300) -> str:
    """An inline SVG line chart of pass^k against k, one line per summary.

    Args:
        summaries: The groups to plot.
        width: Pixel width.
        height: Pixel height.

    Returns:
        SVG markup.
    """
    ks = sorted({k for s in summaries for k in s.pass_hat_k}) or [1]
    left, right, top, bottom = 48, 150, 16, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(ks[-1] - ks[0], 1)

    def x(k: int) -> float:
        return left + (k - ks[0]) / span * plot_w if len(ks) > 1 else left + plot_w / 2

    def y(v: float) -> float:
        return top + (1 - v) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="pass^k curve" font-family="sans-serif" font-size="11">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for k in ks:
        parts.append(f'<text x="{x(k):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{k}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">k</text>')
    for i, s in enumerate(summaries):
        color = _PALETTE[i % len(_PALETTE)]
        points = [(x(k), y(v)) for k, v in sorted(s.pass_hat_k.items())]
        if points:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            # Later lines dashed and thinner on top, so a curve equal to an earlier one stays visible.
            dash = "" if i == 0 else f' stroke-dasharray="{6 - i % 3},{3 + i % 3}"'
            width_px, radius = (3, 4) if i == 0 else (1.6, 2.5)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width_px}"{dash} points="{path}"/>')
            parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{radius}" fill="{color}"/>' for px, py in points)
        ly = top + 14 + i * 16
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly}">{html.escape(s.label[:20])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def png_figure(summaries: Sequence[Summary]) -> Any:
    """The pass^k figure as a matplotlib ``Figure`` (integer k ticks; equal curves stay visible).

    Raises:
        ImportError: When matplotlib is not installed.

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, s in enumerate(summaries):
        ks = sorted(s.pass_hat_k)
        color = _PALETTE[i % len(_PALETTE)]
        # Later curves are drawn dashed, with smaller markers, on top: a curve equal to an earlier one (an
        # agent that scores like the do-nothing baseline) stays visible instead of hiding under it.
        ax.plot(
            ks,
            [s.pass_hat_k[k] for k in ks],
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=max(8 - 2 * i, 4),
            linestyle="-" if i == 0 else (0, (4, 2 + i)),
            linewidth=2.5 if i == 0 else 1.6,
            color=color,
            label=s.label,
            zorder=3 + i,
        )
        lows = [s.pass_hat_k_ci.get(k, (s.pass_hat_k[k],) * 2)[0] for k in ks]
        highs = [s.pass_hat_k_ci.get(k, (s.pass_hat_k[k],) * 2)[1] for k in ks]
        ax.fill_between(ks, lows, highs, color=color, alpha=0.12)
    every_k = sorted({k for s in summaries for k in s.pass_hat_k})
    if 0 < len(every_k) <= 12:
        ax.set_xticks(every_k)  # k is a count of trials: one tick per k, never 1.5
        ax.set_xlim(every_k[0] - 0.25, every_k[-1] + 0.25)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_png(summaries: Sequence[Summary], path: str | Path) -> Path | None:
    """Plot pass^k against k per summary as a PNG (needs the ``report`` extra: matplotlib).

    Args:
        summaries: The groups to plot.
        path: Output file.

    Returns:
        The path, or None when matplotlib is not installed.
    """
    try:
        fig = png_figure(summaries)
    except ImportError:
        return None
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


_MISSING = object()


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix] = value


def field_changes(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields of one changed row that differ, as ``{"field", "before", "after"}`` (nested paths).

    A new row lists every field with ``before`` None; a deleted one every field with ``after`` None.

    Args:
        row: A diff row (``table``, ``key``, ``before``, ``after``).

    Returns:
        Changed leaves, e.g. ``{"field": "items[0].status", "before": "pending", "after": "cancelled"}``.

    """
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if row.get("before") is not None:
        _flatten(row["before"], "", before)
    if row.get("after") is not None:
        _flatten(row["after"], "", after)
    fields = list(before) + [f for f in after if f not in before]
    out = []
    for name in fields:
        old, new = before.get(name, _MISSING), after.get(name, _MISSING)
        if old != new:
            out.append(
                {
                    "field": name or "(row)",
                    "before": None if old is _MISSING else old,
                    "after": None if new is _MISSING else new,
                }
            )
    return out


def row_changes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each changed row as ``{"table", "key", "kind", "fields"}`` (kind: ``new``, ``deleted``, ``changed``)."""
    out = []
    for row in rows:
        kind = "new" if row.get("before") is None else ("deleted" if row.get("after") is None else "changed")
        out.append({"table": row.get("table"), "key": row.get("key"), "kind": kind, "fields": field_changes(row)})
    return out


def _episode_view(ep: Episode, actions: Sequence[Any] | None) -> dict[str, Any]:
    return {
        "id": ep.episode_id,
        "label": label_of(ep),
        "task": ep.task_id,
        "trial": ep.trial,
        "reward": ep.reward,
        "termination": ep.termination,
        "error": ep.error,
        "turns": ep.num_turns,
        "seed": ep.seed,
        "reward_info": ep.reward_info.model_dump() if ep.reward_info else None,
        "messages": [m.to_openai() | ({"error": True} if getattr(m, "error", False) else {}) for m in ep.messages],
        "diff": row_changes(ep.diff),
        "gold_diff": row_changes(ep.gold_diff),
        "credit": partial_credit(ep, actions).to_dict(),
    }


def write_html(
    episodes: Sequence[Episode],
    summaries: Sequence[Summary],
    path: str | Path,
    *,
    title: str = "",
    actions: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write the self-contained HTML report.

    Args:
        episodes: Episodes to browse.
        summaries: Metrics per group.
        path: Output file.
        title: Page title.
        actions: Task id -> gold actions, for the "gold calls made" column (unknown tasks show "-").

    Returns:
        The path.
    """
    actions = actions or {}
    data = {
        "title": title or "apigen-envs report",
        "summaries": [s.to_dict() for s in summaries],
        "episodes": [_episode_view(ep, actions.get(ep.task_id)) for ep in episodes],
    }
    # "<" as a JSON escape means no model text can close the data block or open a tag.
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    template = resources.files("apigen_envs.assets").joinpath("report.html").read_text(encoding="utf-8")
    page = (
        template.replace("{{TITLE}}", html.escape(data["title"]))
        .replace("{{CURVE}}", svg_curve(summaries))
        .replace("{{DATA}}", payload)
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def write_report(
    episodes: Sequence[Episode],
    summaries: Sequence[Summary],
    out_dir: str | Path,
    *,
    title: str = "",
    actions: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Path]:
    """Write ``report.html``, ``pass_k.png`` (when matplotlib is available) and ``metrics.json``.

    Args:
        episodes: Episodes to browse.
        summaries: Metrics per group.
        out_dir: Output folder.
        title: Page title.
        actions: Task id -> gold actions (for partial credit).

    Returns:
        Kind -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"html": write_html(episodes, summaries, out / "report.html", title=title, actions=actions)}
    png = write_png(summaries, out / "pass_k.png")
    if png is not None:
        written["png"] = png
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps([s.to_dict() for s in summaries], indent=2), encoding="utf-8")
    written["metrics"] = metrics
    return written
