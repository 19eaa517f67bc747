"""The predict pipeline: wiring, progress, run record. See :func:`run_predict`."""
