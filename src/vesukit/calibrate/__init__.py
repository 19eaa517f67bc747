"""The offline tool that fits the decision: rule and post-processing search on labelled volumes.

What predict applies (rules, the calibration file, post-processing steps) lives in
:mod:`vesukit.decide`; this package only chooses among its options, from a cached ensemble pass
(:mod:`~vesukit.calibrate.cache`) or from probability maps saved on disk
(:mod:`~vesukit.calibrate.maps`).
"""
