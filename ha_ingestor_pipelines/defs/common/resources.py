import os

import dagster as dg

from .lake_resource import LakeResource, WarehouseResource

# LakeResource field -> the environment variable that sets it (read by Dagster when a run starts; unset
# variables keep the field's default)
LAKE_SETTINGS = {
    "root": "HA_INGESTOR_LAKE",
    "tables": "HA_INGESTOR_TABLES",
    "s3_endpoint_url": "HA_INGESTOR_S3_ENDPOINT_URL",
    "s3_region": "HA_INGESTOR_S3_REGION",
    "s3_access_key_id": "HA_INGESTOR_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "HA_INGESTOR_S3_SECRET_ACCESS_KEY",
    "landing_retention_days": "HA_INGESTOR_LANDING_RETENTION_DAYS",
    "vacuum_retention_hours": "HA_INGESTOR_VACUUM_RETENTION_HOURS",
}
INTEGER_SETTINGS = {"landing_retention_days", "vacuum_retention_hours"}


def lake_from_environment() -> LakeResource:
    """The lake resource configured through ``dg.EnvVar`` for every variable that is set."""
    settings = {
        field: dg.EnvVar.int(variable) if field in INTEGER_SETTINGS else dg.EnvVar(variable)
        for field, variable in LAKE_SETTINGS.items()
        if variable in os.environ
    }
    return LakeResource(**settings)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "lake": lake_from_environment(),
            "warehouse": WarehouseResource(database=os.environ.get("HA_INGESTOR_WAREHOUSE", "./data/warehouse.duckdb")),
        }
    )
