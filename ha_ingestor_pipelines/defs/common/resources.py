import os

import dagster as dg

from .lake_resource import LakeResource, WarehouseResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "lake": LakeResource(root=os.environ.get("HA_INGESTOR_LAKE", "./data/lake")),
            "warehouse": WarehouseResource(database=os.environ.get("HA_INGESTOR_WAREHOUSE", "./data/warehouse.duckdb")),
        }
    )
