"""The Neuron image runs the ML stack of the Neuron SDK and optimum-neuron, not the server's own pins: it is built
under constraints-neuron.txt with `pip check`, and `make test` runs the serving tests under the same set."""
from __future__ import annotations

import re

import pytest

import versions
from tests.buildspecs.dockerfile_parser import parse_dockerfile
from tests.conftest import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "constraints-neuron.txt"


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile((REPO_ROOT / "serving" / "Dockerfile").read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_the_constraints_are_the_neuron_images_set():
    pins = _pins()
    assert pins["optimum-neuron"] == versions.IMAGE_BUILD_VERSIONS["OPTIMUM_NEURON_VERSION"]
    dlc_torch = re.search(r":(\d+\.\d+\.\d+)-neuronx", versions.IMAGE_BUILD_VERSIONS["NEURON_IMAGE"]).group(1)
    assert pins["torch"] == dlc_torch
    # optimum-neuron 0.4.5: diffusers==0.35.*, transformers~=4.57.1, optimum~=2.0.0, huggingface_hub>=0.35.3.
    assert pins["diffusers"].startswith("0.35.") and pins["transformers"].startswith("4.57.")
    assert pins["optimum"].startswith("2.0.") and tuple(map(int, pins["huggingface-hub"].split("."))) < (1,)


@pytest.mark.parametrize("stage, installs", [("neuron-sdk", "optimum-neuron"),
                                             ("neuron-runtime", "-r /tmp/requirements-neuron.txt")])
def test_each_neuron_install_is_constrained_and_checked(dockerfile, stage, installs):
    runs = [i.args for i in dockerfile.stage(stage).all("RUN") if "pip install" in i.args]
    assert runs, f"{stage} installs nothing"
    for run in runs:
        assert "-c /tmp/constraints-neuron.txt" in run, f"{stage}: unconstrained install: {run}"
        assert "pip check" in run, f"{stage}: no pip check after: {run}"
    assert any(installs in run for run in runs)
    copies = " ".join(i.args for i in dockerfile.stage(stage).all("COPY"))
    assert "constraints-neuron.txt" in copies


def test_make_test_runs_the_serving_tests_under_the_neuron_set():
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest:"):].split("\n\n", 1)[0]
    assert "NEURON_SET := .venv-neuron-set" in makefile
    assert "$(NEURON_SET)/bin/python -m pytest tests/serving" in recipe
    rule = makefile[makefile.index("$(NEURON_SET)/.installed:"):].split("\n\n", 1)[0]
    assert "constraints-neuron.txt" in rule.splitlines()[0]
    assert "grep -E '^(diffusers|transformers|tokenizers|huggingface-hub|numpy)==' constraints-neuron.txt" in rule
