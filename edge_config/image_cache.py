"""The node image cache: an EBS snapshot of a containerd store holding the serving images (docs/cold-start.md)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, model_validator

from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section


class NodeImageCacheConfig(Section):
    """After each publish the pipeline pulls the new serving images onto a data volume and snapshots it; Local
    Zone nodes then start with that volume as their containerd store, so a new node pulls nothing it has."""

    build_snapshots: StrictBool = Field(True, description="Build the snapshot in the image pipeline after each publish "
                                                    "and record its id in the SSM parameter.")
    attach_to_nodes: StrictBool = Field(False, description="Give Local Zone nodes without NVMe instance store a data "
                                                     "volume restored from the recorded snapshot; needs one "
                                                     "finished pipeline run first.")
    volume_size_gib: int = Field(100, ge=40, le=1000, description="Size of the cache volume in GiB (the unpacked "
                                                                  "images plus room for newer layers).")
    builder_instance_type: Annotated[str, Hint("give an x86_64 instance type like \"c6in.4xlarge\"")] = Field(
        "c6in.4xlarge", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$",
        description="x86_64 instance type that pulls the images in the parent region (network-bound).")


    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data: object) -> object:
        if isinstance(data, dict) and "volume_initialization_rate_mibps" in data:
            raise FieldProblem("was removed: EBS offers no volume initialization rate in Local Zones, the only place "
                               "the cache volume is attached, and a launch asking for one fails",
                               "delete edge.node_image_cache.volume_initialization_rate_mibps",
                               ("volume_initialization_rate_mibps",))
        return data
