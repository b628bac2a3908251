"""The front end's upload checks under their old import path, kept for coordinator/uploads.py
(outside converters/). New code imports :mod:`converters.frontend`."""

from converters.frontend.archive import (
    archive_kind,
    check_model_archive,
    external_data_locations,
)

__all__ = ["archive_kind", "check_model_archive", "external_data_locations"]
