"""The official Vesuvius leaderboard metric, reimplemented exactly (docs/metric.md).

Public API: :func:`score_volume`, :class:`PreparedLabel`, :class:`VolumeScore`,
:func:`score_predictions`. numba is needed (extra ``vesukit[metric]``).
"""

from vesukit.metric.score import PreparedLabel, VolumeScore, score_volume


def score_predictions(pred_source, labels_dir, *, workers=None):
    from vesukit.metric.io import score_predictions as _impl

    return _impl(pred_source, labels_dir, workers=workers)


__all__ = ["PreparedLabel", "VolumeScore", "score_volume", "score_predictions"]
