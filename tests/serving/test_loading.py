"""The loader's start-up path: weights placed by device_map, and its phases logged for the cold-start benchmark."""
from __future__ import annotations

import pytest

from serving.model import deviceinit, loading


@pytest.fixture
def fresh_inits(monkeypatch):
    monkeypatch.setattr(deviceinit, "_started", {})


# diffusers < 0.36 forbids pipe.to() after any device_map; the Neuron image loads through optimum-neuron instead.
@pytest.mark.server_set_only
def test_load_pipeline_places_weights_by_device_map_and_logs_its_phases(fresh_inits, tiny_model, caplog):
    with caplog.at_level("INFO", logger="serving.loading"):
        pipe = loading.load_pipeline(str(tiny_model), "cpu")
    assert pipe.hf_device_map == "cpu"
    assert {p.device.type for p in pipe.unet.parameters()} == {"cpu"}
    # A single-device map is not a sharded pipeline: moving it stays allowed.
    assert pipe.to("cpu") is pipe
    fields = next(r.fields for r in caplog.records if r.getMessage() == "pipeline loaded")
    assert fields["device"] == "cpu" and fields["device_init_s"] is None
    assert fields["imports_s"] >= 0 and fields["build_s"] > 0
