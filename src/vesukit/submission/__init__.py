"""The submission: a streaming zip writer and a validator that reads zips as the scorer does.

Torch-free by contract: ``python -m vesukit validate`` must work with numpy, tifffile and
Pillow only.
"""

from vesukit.submission.validate import (
    FileInfo,
    Issue,
    ValidationReport,
    expected_volumes,
    format_report,
    scorer_id,
    validate_zip,
)
from vesukit.submission.writer import SubmissionError, SubmissionWriter

__all__ = [
    "FileInfo",
    "Issue",
    "SubmissionError",
    "SubmissionWriter",
    "ValidationReport",
    "expected_volumes",
    "format_report",
    "scorer_id",
    "validate_zip",
]
