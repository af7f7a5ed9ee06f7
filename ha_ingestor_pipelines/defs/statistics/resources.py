import dagster as dg

from .ha_resource import HomeAssistantResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "home_assistant": HomeAssistantResource(url=dg.EnvVar("HA_URL"), token=dg.EnvVar("HA_TOKEN")),
        }
    )
