"""Audit records, alarms on crafted bad masks, the preview PNG and the index page."""

import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from vesukit.maps import EnsembleMaps
from vesukit.report import (
    AlarmLimits,
    alarms,
    read_audits,
    volume_audit,
    write_index_html,
    write_preview_png,
    write_volume_audit,
)
from vesukit.synth import synth_volume

Maps = partial(EnsembleMaps, n_teachers=2, total_weight=2.0)


SHAPE = (24, 28, 32)


def good_case():
    image, label = synth_volume(SHAPE, seed=3)
    surface = (label == 1).astype(np.float32)
    mean = np.clip(0.05 + 0.85 * surface, 0, 1).astype(np.float32)
    disagreement = np.where(surface > 0, 0.1, 0.0).astype(np.float32)
    maps = Maps(mean, np.zeros_like(mean), disagreement)
    mask = (mean >= 0.4).astype(np.uint8)
    return image, maps, mask


def audit_of(image, maps, mask, threshold=0.4, **kwargs):
    return volume_audit("vol", image, maps, mask, threshold, "fixed(threshold=0.4)",
                        ["a", "b"], "flip", 1.5, **kwargs)


def test_audit_numbers_match_the_mask():
    image, maps, mask = good_case()
    audit = audit_of(image, maps, mask)
    assert audit["shape"] == list(SHAPE)
    assert audit["foreground_voxels"] == int(mask.sum())
    assert audit["foreground_fraction"] == pytest.approx(mask.mean())
    assert audit["mean_probability_in_mask"] == pytest.approx(0.9)
    assert audit["max_probability"] == pytest.approx(0.9)
    assert audit["disagreement"]["mean_in_mask"] == pytest.approx(0.1)
    assert audit["disagreement"]["share_disputed"] == pytest.approx(mask.mean())
    assert audit["components"] >= 1
    assert 0 < audit["largest_component_share"] <= 1
    assert audit["teachers"] == ["a", "b"] and audit["tta"] == "flip"
    assert audit["seconds"] == 1.5 and audit["n_teachers"] == 2
    assert audit["alarms"] == []
    json.dumps(audit)  # JSON-ready


def test_components_and_largest_share():
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask[1:4, 1:4, 1:4] = 1      # 27
    mask[7, 7, 7:10] = 1         # 3
    maps = Maps(mask * 0.8, np.zeros(mask.shape), np.zeros(mask.shape))
    audit = audit_of(np.zeros(mask.shape, np.uint8), maps, mask)
    assert audit["components"] == 2
    assert audit["largest_component_voxels"] == 27
    assert audit["largest_component_share"] == pytest.approx(27 / 30)


def test_alarm_for_an_empty_mask():
    image, maps, mask = good_case()
    audit = audit_of(image, maps, np.zeros_like(mask))
    assert any(a.startswith("empty mask") for a in audit["alarms"])


def test_alarm_for_one_giant_blob():
    image, maps, mask = good_case()
    blob = np.ones_like(mask)
    audit = audit_of(image, maps, blob)
    assert any(a.startswith("one giant blob") for a in audit["alarms"])
    # many separate pieces covering as much are not "one blob"
    pieces = np.zeros_like(mask)
    pieces[:, :, ::2] = 1
    audit = audit_of(image, maps, pieces)
    assert audit["foreground_fraction"] == pytest.approx(0.5)
    assert not any(a.startswith("one giant blob") for a in audit["alarms"])


def test_alarm_for_a_never_confident_map():
    image, maps, mask = good_case()
    timid = Maps(maps.mean * 0.3, maps.variance, maps.disagreement)  # max 0.27
    audit = audit_of(image, timid, (timid.mean >= 0.2).astype(np.uint8), threshold=0.4)
    assert any(a.startswith("never confident") for a in audit["alarms"])
    assert not any(a.startswith("empty") for a in audit["alarms"])
    # confident enough once the limits say so
    assert alarms(audit, AlarmLimits(far_below=0.5, min_confidence=0.2)) == []


def test_alarm_for_a_fallback_volume():
    found = alarms({"status": "fallback", "reason": "unreadable", "foreground_voxels": 0})
    assert found == ["fallback: an empty mask was written (unreadable)"]


def test_preview_png_shows_every_row_and_axis(tmp_path):
    image, maps, mask = good_case()
    path = write_preview_png(tmp_path / "vol.png", image, maps, mask, title="vol")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[0] > picture.shape[1] > 300
    red = (picture[..., 0] == 255) & (picture[..., 1] == 40) & (picture[..., 2] == 40)
    assert red.sum() > 0  # the mask overlay is drawn


def test_preview_accepts_torch_maps(tmp_path):
    torch = pytest.importorskip("torch")
    image, maps, mask = good_case()
    as_torch = Maps(torch.from_numpy(maps.mean), torch.from_numpy(maps.variance),
                    torch.from_numpy(maps.disagreement))
    write_preview_png(tmp_path / "t.png", image, as_torch, torch.from_numpy(mask))
    audit = volume_audit("t", image, as_torch, torch.from_numpy(mask), 0.4, "fixed", ["a"],
                         None, 0.0)
    assert audit["foreground_voxels"] == int(mask.sum())


def test_index_page_lists_volumes_with_alarms_first(tmp_path):
    image, maps, mask = good_case()
    folder = tmp_path / "audit"
    good = volume_audit("good", image, maps, mask, 0.4, "fixed", ["a"], "none", 1.0,
                        extra={"worker": 0})
    empty = volume_audit("empty<1>", image, maps, np.zeros_like(mask), 0.4, "fixed", ["a"],
                         "none", 1.0)
    write_volume_audit(folder, good, image, maps, mask)
    write_volume_audit(folder, empty, image, maps, np.zeros_like(mask))
    page = write_index_html(folder).read_text()
    assert page.index("empty&lt;1&gt;") < page.index(">good<")  # alarms first, escaped
    assert "1 with alarms" in page
    assert "good.png" in page and "empty&lt;1&gt;.png" in page
    assert (folder / "good.png").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["alarms"]) == ["empty<1>"]
    assert read_audits(folder)[1]["worker"] == 0
    assert {r["volume_id"] for r in read_audits(folder)} == {"good", "empty<1>"}


def test_index_page_shows_a_fallback_volume_without_maps(tmp_path):
    """A volume that could not be predicted has only its state: no threshold, no preview."""
    state = {"volume_id": "broken", "status": "fallback", "reason": "unreadable TIFF",
             "threshold": None, "foreground": 0.0, "seconds": 0.1}
    write_volume_audit(tmp_path, {**state, "alarms": alarms(state)})
    page = write_index_html(tmp_path).read_text()
    assert "fallback: an empty mask was written (unreadable TIFF)" in page
    assert "(no preview)" in page and "threshold -" in page
