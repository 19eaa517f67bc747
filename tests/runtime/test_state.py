"""Per-volume state: atomic, fingerprinted, and never reusing fallbacks on resume."""

from __future__ import annotations

import numpy as np

from vesukit.data import encode_volume, read_volume
from vesukit.runtime.state import DONE, FALLBACK, StateStore, VolumeState, fingerprint


def test_round_trip_and_resume_rules(tmp_path):
    store = StateStore(tmp_path / "work")
    mask = np.zeros((3, 4, 5), np.uint8)
    mask[1, 2, 3] = 1
    fp = fingerprint({"teachers": ["a"]}, "flip")
    state = VolumeState("v1", DONE, fp, (3, 4, 5), threshold=0.4, foreground=1 / 60,
                        teacher_seconds={"a": 1.5}, degraded=["x"])
    store.save(state, encode_volume(mask))
    assert store.load("v1") == state
    np.testing.assert_array_equal(read_volume(store.mask_path("v1")), mask)

    assert store.finished("v1", fp, (3, 4, 5)) == state
    assert store.finished("v1", fingerprint({"teachers": ["b"]}, "flip"), (3, 4, 5)) is None
    assert store.finished("v1", fp, (3, 4, 6)) is None
    assert store.finished("v2", fp, (3, 4, 5)) is None

    store.save(VolumeState("v3", FALLBACK, fp, (3, 4, 5), reason="unreadable"),
               encode_volume(np.zeros((3, 4, 5), np.uint8)))
    assert store.load("v3").status == FALLBACK
    assert store.finished("v3", fp, (3, 4, 5)) is None  # fallbacks are redone


def test_state_without_mask_or_broken_state_is_not_finished(tmp_path):
    store = StateStore(tmp_path)
    fp = fingerprint(1)
    store.save(VolumeState("v", DONE, fp, (2, 2, 2)), encode_volume(np.zeros((2, 2, 2), np.uint8)))
    store.mask_path("v").unlink()
    assert store.finished("v", fp, (2, 2, 2)) is None
    (store.states / "w.json").write_text("{not json")
    store.mask_path("w").write_bytes(b"")
    assert store.load("w") is None


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
