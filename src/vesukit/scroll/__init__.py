"""Whole-scroll segmentation: the teachers, engine and decision over volumes that do not fit
in memory, chunk by chunk on a Dask cluster, seamless with the one-volume path.

``plan`` is pure geometry (which voxels and windows a chunk needs), ``blocks`` runs the
ensemble over one chunk, ``store`` is the output OME-Zarr and its resume records, ``run``
drives a Dask cluster. Importing this package imports nothing heavy.
"""
