"""Reports people can look at: a pass^k curve (PNG) and a self-contained HTML page.

The HTML page holds the metrics, an inline SVG pass^k curve, the per-task table, and a browser of every
episode (conversation, tool calls and results, the episode's DB diff beside the gold diff). It needs no
server or network. Model-written text is inserted with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from apigen_envs.episode import Episode
from apigen_envs.metrics import Summary, label_of

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
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
            parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in points)
        ly = top + 14 + i * 16
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly}">{html.escape(s.label[:20])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_png(summaries: Sequence[Summary], path: str | Path) -> Path | None:
    """Plot pass^k against k per summary as a PNG (needs the ``report`` extra: matplotlib).

    Args:
        summaries: The groups to plot.
        path: Output file.

    Returns:
        The path, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, s in enumerate(summaries):
        ks = sorted(s.pass_hat_k)
        ax.plot(ks, [s.pass_hat_k[k] for k in ks], marker="o", color=_PALETTE[i % len(_PALETTE)], label=s.label)
        lows = [s.pass_hat_k_ci.get(k, (s.pass_hat_k[k],) * 2)[0] for k in ks]
        highs = [s.pass_hat_k_ci.get(k, (s.pass_hat_k[k],) * 2)[1] for k in ks]
        ax.fill_between(ks, lows, highs, color=_PALETTE[i % len(_PALETTE)], alpha=0.12)
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _episode_view(ep: Episode) -> dict[str, Any]:
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
        "diff": ep.diff,
        "gold_diff": ep.gold_diff,
    }


def write_html(episodes: Sequence[Episode], summaries: Sequence[Summary], path: str | Path, *, title: str = "") -> Path:
    """Write the self-contained HTML report.

    Args:
        episodes: Episodes to browse.
        summaries: Metrics per group.
        path: Output file.
        title: Page title.

    Returns:
        The path.
    """
    data = {
        "title": title or "apigen-envs report",
        "summaries": [s.to_dict() for s in summaries],
        "episodes": [_episode_view(ep) for ep in episodes],
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
    episodes: Sequence[Episode], summaries: Sequence[Summary], out_dir: str | Path, *, title: str = ""
) -> dict[str, Path]:
    """Write ``report.html``, ``pass_k.png`` (when matplotlib is available) and ``metrics.json``.

    Args:
        episodes: Episodes to browse.
        summaries: Metrics per group.
        out_dir: Output folder.
        title: Page title.

    Returns:
        Kind -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"html": write_html(episodes, summaries, out / "report.html", title=title)}
    png = write_png(summaries, out / "pass_k.png")
    if png is not None:
        written["png"] = png
    metrics = out / "metrics.json"
    metrics.write_text(json.dumps([s.to_dict() for s in summaries], indent=2), encoding="utf-8")
    written["metrics"] = metrics
    return written
