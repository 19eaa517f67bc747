"""Audit of every predicted volume: a JSON of numbers, a PNG of mid-slices, one HTML index.

For each volume ``audit/<id>.json`` says how the mask was made (threshold and rule, teachers,
TTA, seconds) and what it looks like (foreground share, components, the largest one's share,
mean probability inside the mask, disagreement), and lists alarms for masks that are almost
certainly wrong: empty, one giant blob, or cut from a probability map that never gets
confident. ``audit/<id>.png`` shows the image, probability, mask and disagreement through the
volume's middle along the three axes; ``audit/index.html`` shows all volumes, alarms first.

Only numpy, scipy (through post-processing's component labelling) and Pillow are used: the
audit works on a bare Kaggle image, without matplotlib or torch.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vesukit._arrays import as_numpy, map_array
from vesukit.data import atomic_write_bytes
from vesukit.errors import VesukitError

AUDIT_FORMAT = 1
TILE = 192  # pixels per preview tile (the longer side of a mid-slice)


@dataclass(frozen=True)
class AlarmLimits:
    """When a volume's audit raises an alarm (see :func:`alarms`)."""

    giant_foreground: float = 0.3   # a mask over 30 % of the volume (labels hold ~4-9 %) ...
    giant_share: float = 0.9        # ... that is (almost) all one component is one giant blob
    far_below: float = 0.75         # max probability < 0.75 x threshold: never confident
    min_confidence: float = 0.5     # or the ensemble never reaches 0.5 anywhere


def _fraction(part: float, whole: float) -> float:
    return float(part / whole) if whole else 0.0


def volume_audit(volume_id: str, image, maps, mask, threshold: float, rule: str,
                 teachers: Sequence[str], tta: str | None, seconds: float,
                 extra: Mapping[str, Any] | None = None,
                 limits: AlarmLimits = AlarmLimits()) -> dict:
    """The audit record of one volume (JSON-ready); ``alarms`` is filled in.

    ``image`` is the uint8 volume (only its shape is used here), ``maps`` the ensemble maps
    (numpy or torch), ``mask`` the final 0/1 mask after post-processing, ``rule`` a description
    such as ``ThresholdRule.describe()``. ``extra`` entries (worker, degraded teachers...) are
    copied in as they are.
    """
    from vesukit.decide.steps import component_sizes, label_components

    mask = as_numpy(mask).astype(bool, copy=False)
    mean = map_array(maps, "mean")
    disagreement = map_array(maps, "disagreement")
    voxels = mask.size
    marked = int(mask.sum())
    labels, count = label_components(mask)
    largest = int(component_sizes(labels, count)[1:].max()) if count else 0
    inside = disagreement[mask] if marked else np.zeros(0, dtype=np.float32)
    audit = {
        "format": AUDIT_FORMAT,
        "volume_id": volume_id,
        "shape": [int(s) for s in np.shape(image)],
        "threshold": float(threshold),
        "rule": rule,
        "foreground_fraction": _fraction(marked, voxels),
        "foreground_voxels": marked,
        "components": count,
        "largest_component_share": _fraction(largest, marked),
        "largest_component_voxels": largest,
        "mean_probability_in_mask": float(mean[mask].mean()) if marked else 0.0,
        "max_probability": float(mean.max()) if mean.size else 0.0,
        "disagreement": {
            "mean": float(disagreement.mean()) if disagreement.size else 0.0,
            "mean_in_mask": float(inside.mean()) if inside.size else 0.0,
            "p95_in_mask": float(np.percentile(inside, 95)) if inside.size else 0.0,
            "share_disputed": _fraction(int((disagreement > 0).sum()), voxels),
        },
        "n_teachers": int(getattr(maps, "n_teachers", len(teachers))),
        "teachers": list(teachers),
        "tta": tta,
        "seconds": float(seconds),
    }
    if extra:
        audit.update({key: value for key, value in extra.items() if key not in audit})
    audit["alarms"] = alarms(audit, limits)
    return audit


def alarms(audit: Mapping[str, Any], limits: AlarmLimits = AlarmLimits()) -> list[str]:
    """Plain-language alarms for an audit record; an empty list when nothing looks wrong."""
    found = []
    fallback = audit.get("status") == "fallback"
    if fallback:
        found.append(f"fallback: an empty mask was written ({audit.get('reason', 'no reason')})")
    fraction = float(audit.get("foreground_fraction") or 0.0)
    if fallback:
        pass  # the fallback alarm already says the mask is empty
    elif audit.get("foreground_voxels", 0) == 0:
        found.append("empty mask: no voxel is marked as surface")
    elif (fraction >= limits.giant_foreground
          and audit.get("largest_component_share", 0.0) >= limits.giant_share):
        found.append(
            f"one giant blob: the mask covers {fraction:.0%} of the volume and its largest "
            f"component holds {audit['largest_component_share']:.0%} of it")
    top, threshold = audit.get("max_probability"), audit.get("threshold")
    if top is not None and threshold is not None:
        if top < limits.far_below * threshold or top < limits.min_confidence:
            found.append(
                f"never confident: the highest probability is {top:.2f} (threshold "
                f"{threshold:.2f}); the teachers may not fit this volume")
    return found


# --- preview PNG -------------------------------------------------------------------------

# A perceptually ordered colour ramp (dark blue -> teal -> yellow), sampled at five anchors.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                 dtype=np.float32)


def _colour(values: np.ndarray) -> np.ndarray:
    """RGB uint8 for values in [0, 1] along :data:`_RAMP`."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    t = (position - low)[..., None]
    return (_RAMP[low] * (1 - t) + _RAMP[high] * t).astype(np.uint8)


def _mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    z, y, x = (s // 2 for s in volume.shape)
    return [volume[z], volume[:, y, :], volume[:, :, x]]


def _tiles(image, mean, mask, disagreement) -> list[list[np.ndarray]]:
    """Rows image / probability / mask / disagreement, columns the three axes (RGB arrays)."""
    rows = []
    grey = [np.repeat(s[..., None], 3, axis=2).astype(np.uint8) for s in _mid_slices(image)]
    rows.append(grey)
    rows.append([_colour(s) for s in _mid_slices(mean)])
    overlay = []
    for g, m in zip(grey, _mid_slices(mask)):
        tile = (g * 0.6).astype(np.uint8)
        tile[m] = (255, 40, 40)  # mask in red over the dimmed image
        overlay.append(tile)
    rows.append(overlay)
    rows.append([_colour(s) for s in _mid_slices(disagreement)])
    return rows


def write_preview_png(path: str | Path, image, maps, mask, title: str = "") -> Path:
    """Mid-slices (Z, Y, X columns) of image, probability, mask and disagreement (rows)."""
    from PIL import Image, ImageDraw

    image = as_numpy(image).astype(np.uint8, copy=False)
    mean = map_array(maps, "mean")
    disagreement = map_array(maps, "disagreement")
    mask = as_numpy(mask).astype(bool, copy=False)
    rows = _tiles(image, mean, mask, disagreement)
    names = ["image", "probability", "mask", "disagreement"]
    axes = ["z mid", "y mid", "x mid"]
    label_width, header = 96, 36
    canvas = Image.new("RGB", (label_width + 3 * (TILE + 4), header + 4 * (TILE + 4)),
                       (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill=(240, 240, 240))
    for col, axis in enumerate(axes):
        draw.text((label_width + col * (TILE + 4) + 4, 20), axis, fill=(200, 200, 200))
    for row, (name, tiles) in enumerate(zip(names, rows)):
        top = header + row * (TILE + 4)
        draw.text((4, top + TILE // 2), name, fill=(220, 220, 220))
        for col, tile in enumerate(tiles):
            picture = Image.fromarray(np.ascontiguousarray(tile), "RGB")
            scale = TILE / max(picture.size)
            size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
            picture = picture.resize(size, Image.NEAREST)
            canvas.paste(picture, (label_width + col * (TILE + 4), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_volume_audit(folder: str | Path, audit: Mapping[str, Any], image=None, maps=None,
                       mask=None) -> Path:
    """Write ``<id>.json`` (and ``<id>.png`` when image, maps and mask are given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dict(audit)
    volume_id = record["volume_id"]
    if image is not None and maps is not None and mask is not None:
        write_preview_png(folder / f"{volume_id}.png", image, maps, mask,
                          title=f"{volume_id}  thr {record.get('threshold') or 0:.3f}  "
                                f"{record.get('rule', '')}")
        record["preview"] = f"{volume_id}.png"
    path = folder / f"{volume_id}.json"
    atomic_write_bytes(path, json.dumps(record, indent=2).encode())
    return path


# --- index page --------------------------------------------------------------------------

def read_audits(folder: str | Path) -> list[dict]:
    """Every ``*.json`` audit record in ``folder`` (files that are not audits are skipped)."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "volume_id" in record:
            records.append(record)
    return records


def summarize(records: Sequence[Mapping[str, Any]]) -> dict:
    """Counts and the alarmed volumes over a run's audits."""
    alarmed = {r["volume_id"]: list(r.get("alarms") or alarms(r)) for r in records}
    alarmed = {k: v for k, v in alarmed.items() if v}
    thresholds = [r["threshold"] for r in records if r.get("threshold") is not None]
    return {
        "volumes": len(records),
        "alarmed": len(alarmed),
        "alarms": alarmed,
        "threshold_range": [min(thresholds), max(thresholds)] if thresholds else None,
        "seconds": float(sum(r.get("seconds", 0.0) for r in records)),
    }


_STYLE = """
body { font-family: sans-serif; background: #fafafa; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; font-size: 13px; text-align: right; }
th { background: #eee; } td.id, td.alarm { text-align: left; }
tr.bad { background: #fde2e2; } .alarm { color: #b00; }
figure { display: inline-block; margin: 8px; vertical-align: top; }
figcaption { font-size: 13px; } figure.bad figcaption { color: #b00; font-weight: bold; }
img { border: 1px solid #999; max-width: 600px; }
"""


SKILL_LAB = "skill_lab.json"


def skill_lab_for(teachers_folder: str | Path) -> Path | None:
    """The skill-lab table measured for these teachers (``make skill-lab`` writes
    ``skill_lab.json`` into the teachers' and the student's folders), if there is one and it
    was measured on these checkpoints: its ``checkpoints`` stamps match every teacher's file
    (a table of earlier weights, or without stamps, would claim a score they never had)."""
    from vesukit.run_settings import checkpoint_stamps, same_checkpoint
    from vesukit.teachers import load_manifest

    path = Path(teachers_folder) / SKILL_LAB
    if not path.is_file():
        return None
    try:
        measured = json.loads(path.read_text())["checkpoints"]
        manifest = load_manifest(teachers_folder)
    except (OSError, ValueError, KeyError, TypeError, VesukitError):
        return None
    now = checkpoint_stamps(manifest, [s.name for s in manifest.teachers])
    if not isinstance(measured, dict) or set(measured) != set(now) \
            or not all(same_checkpoint(measured[n], now[n]) for n in now):
        return None
    return path


def _skill_lab_section(path: Path | None) -> list[str]:
    """The skill lab's score table, so the page that shows the masks also shows what the
    models were measured to be worth."""
    if path is None or not path.is_file():
        return []
    try:
        lab = json.loads(path.read_text())
        rows = lab["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"<p class='alarm'>{html.escape(str(path))}: unreadable skill-lab table</p>"]
    esc = html.escape
    out = ["<h2>Skill lab (exact metric, held-back volumes)</h2><table><tr><th>row</th>"
           "<th>score</th><th>GFLOP / volume</th><th>s / volume</th><th>note</th></tr>"]
    for name, row in rows.items():
        out.append(f"<tr><td>{esc(name)}</td><td>{row['score']:.4f}</td>"
                   f"<td>{row['gflops']:.2f}</td><td>{row['seconds']:.2f}</td>"
                   f"<td>{esc(str(row.get('note', '')))}</td></tr>")
    out.append(f"</table><p>{esc(lab.get('command', ''))}; held-back volumes: "
               f"{esc(', '.join(lab.get('held_back', [])))}; from {esc(str(path))}</p>")
    return out


def write_index_html(folder: str | Path, title: str = "vesukit audit",
                     skill_lab: str | Path | None = None) -> Path:
    """``index.html`` in ``folder``: summary with alarms, a table and every preview, and the
    skill-lab table of ``skill_lab`` (default: ``folder/skill_lab.json``) if there is one."""
    folder = Path(folder)
    skill_lab = Path(skill_lab) if skill_lab is not None else folder / SKILL_LAB
    records = read_audits(folder)
    for record in records:
        record.setdefault("alarms", alarms(record))
    records.sort(key=lambda r: (not r["alarms"], r["volume_id"]))
    summary = summarize(records)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"]
    line = (f"<p>{summary['volumes']} volumes, <b class='alarm'>{summary['alarmed']} with "
            f"alarms</b>, {summary['seconds']:.1f} s in all")
    if summary["threshold_range"]:
        low, high = summary["threshold_range"]
        line += f"; thresholds {low:.3f} to {high:.3f}"
    parts.append(line + ".</p>")
    if summary["alarms"]:
        parts.append("<h2>Alarms</h2><ul>")
        for volume_id, messages in summary["alarms"].items():
            for message in messages:
                parts.append(f"<li class='alarm'><a href='#{esc(volume_id)}'>{esc(volume_id)}"
                             f"</a>: {esc(message)}</li>")
        parts.append("</ul>")
    columns = ["threshold", "rule", "foreground_fraction", "components",
               "largest_component_share", "mean_probability_in_mask", "max_probability",
               "disagreement", "teachers", "tta", "seconds"]
    headers = {"disagreement": "disagreement in mask", "teachers": "teachers (n)",
               "largest_component_share": "largest component share"}
    parts.append("<h2>Volumes</h2><table><tr><th>id</th>"
                 + "".join(f"<th>{esc(headers.get(c, c.replace('_', ' ')))}</th>"
                           for c in columns)
                 + "<th>alarms</th></tr>")
    for record in records:
        cells = []
        for column in columns:
            value = record.get(column)
            if column == "disagreement" and isinstance(value, Mapping):
                value = value.get("mean_in_mask")
            if column == "teachers" and isinstance(value, list):
                value = len(value)
            if isinstance(value, float):
                value = f"{value:.3f}"
            cells.append(f"<td>{esc(str(value if value is not None else ''))}</td>")
        row_class = " class='bad'" if record["alarms"] else ""
        parts.append(f"<tr{row_class}><td class='id'><a href='#{esc(record['volume_id'])}'>"
                     f"{esc(record['volume_id'])}</a></td>{''.join(cells)}"
                     f"<td class='alarm'>{esc('; '.join(record['alarms']))}</td></tr>")
    parts.append("</table>")
    parts.extend(_skill_lab_section(skill_lab))
    parts.append("<h2>Previews</h2>")
    for record in records:
        volume_id = record["volume_id"]
        figure_class = " class='bad'" if record["alarms"] else ""
        threshold = record.get("threshold")
        caption = esc(f"{volume_id}: threshold "
                      + (f"{threshold:.3f}" if threshold is not None else "-")
                      + f", {record.get('foreground_fraction') or 0:.1%} marked"
                      + (" - " + "; ".join(record["alarms"]) if record["alarms"] else ""))
        preview = record.get("preview")
        body = (f"<img src='{esc(preview)}' alt='{esc(volume_id)}'>" if preview
                else "<p>(no preview)</p>")
        parts.append(f"<figure id='{esc(volume_id)}'{figure_class}>{body}"
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>")
    path = folder / "index.html"
    atomic_write_bytes(path, "\n".join(parts).encode())
    atomic_write_bytes(folder / "summary.json", json.dumps(summary, indent=2).encode())
    return path
