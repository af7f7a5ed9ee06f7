"""The only assembly point: everything under ``defs/`` is autoloaded, and project-wide policy set here."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    # one process per step costs more than it gains on a home server's few cores
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=dg.in_process_executor),
    )
