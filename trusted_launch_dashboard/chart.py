"""A small server-rendered SVG bar chart of hosts per security profile (no scripts, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR_WIDTH = 320
ROW_HEIGHT = 28
LABEL_WIDTH = 90
MEETING_COLOUR = "#3c8d40"
OTHER_COLOUR = "#c9302c"


def profile_chart(counts: Sequence[tuple[str, int, int]]) -> str:
    """SVG markup: per profile, a bar split into hosts meeting it now and the others."""
    height = ROW_HEIGHT * max(len(counts), 1) + 24
    width = LABEL_WIDTH + BAR_WIDTH + 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="tl-profile-chart" '
             f'width="{width}" height="{height}" role="img" '
             f'aria-label="hosts meeting each security profile">']
    for row, (profile, meeting, other) in enumerate(counts):
        total = meeting + other
        y = row * ROW_HEIGHT + 4
        good = round(BAR_WIDTH * meeting / total) if total else 0
        parts.append(f'<text x="0" y="{y + 15}" font-size="13">{escape(profile)}</text>')
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{good}" height="20" '
                     f'fill="{MEETING_COLOUR}"><title>{meeting} meeting {escape(profile)}'
                     f'</title></rect>')
        parts.append(f'<rect x="{LABEL_WIDTH + good}" y="{y}" width="{BAR_WIDTH - good}" '
                     f'height="20" fill="{OTHER_COLOUR}"><title>{other} not meeting '
                     f'{escape(profile)}</title></rect>')
        parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 8}" y="{y + 15}" font-size="13">'
                     f'{meeting}/{total}</text>')
    legend_y = ROW_HEIGHT * max(len(counts), 1) + 16
    parts.append(f'<text x="{LABEL_WIDTH}" y="{legend_y}" font-size="11" fill="{MEETING_COLOUR}"'
                 f'>meets it now</text>')
    parts.append(f'<text x="{LABEL_WIDTH + 110}" y="{legend_y}" font-size="11" '
                 f'fill="{OTHER_COLOUR}">does not, or status not current</text>')
    parts.append("</svg>")
    return "".join(parts)
