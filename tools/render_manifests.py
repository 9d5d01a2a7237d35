"""Extract every Kubernetes object a synthesized stack applies, for review and offline validation.

Sources in a CloudFormation template:
- ``Custom::AWSCDK-EKS-KubernetesResource`` (``cluster.add_manifest`` / ``add_cdk8s_chart``): the ``Manifest``
  property, a JSON list of objects;
- ``Custom::AWSCDK-EKS-HelmChart``: Kubernetes objects embedded in the chart ``Values`` (any mapping with
  ``apiVersion`` and ``kind``, e.g. ``extraObjects``). The values themselves are written too, for review.

Manifests may contain CloudFormation intrinsics (a role name, a queue name...). They are rendered as readable
stand-in strings so the objects stay valid YAML: ``{"Ref": "X"}`` -> ``<Ref:X>``, ``{"Fn::GetAtt": ["X", "Arn"]}`` ->
``<GetAtt:X.Arn>``, pseudo parameters -> ``<AWS::Region>``; ``Fn::Join``/``Fn::Sub`` are joined around them.

CLI: ``python -m tools.render_manifests --assembly cdk.out --out dist`` writes ``dist/<Stack>.<group>.yaml``
(one YAML stream per manifest resource) and ``dist/helm/<Stack>.<release>.values.yaml``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_TYPE = "Custom::AWSCDK-EKS-HelmChart"
_HASH_SUFFIX = re.compile(r"[0-9A-F]{8}$")


class RenderError(ValueError):
    """A template holds something that cannot be rendered into Kubernetes objects."""


def render_intrinsics(value: Any) -> Any:
    """Replace CloudFormation intrinsics with readable stand-in strings (recursively)."""
    if isinstance(value, list):
        return [render_intrinsics(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return f"<{arg}>" if str(arg).startswith("AWS::") else f"<Ref:{arg}>"
        if key == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return f"<GetAtt:{parts[0]}.{parts[1]}>"
        if key == "Fn::Join":
            sep, parts = arg
            return str(sep).join(_as_text(render_intrinsics(p)) for p in parts)
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            rendered_vars = {k: _as_text(render_intrinsics(v)) for k, v in variables.items()}

            def sub(match: re.Match) -> str:
                name = match.group(1)
                if name in rendered_vars:
                    return rendered_vars[name]
                if name.startswith("AWS::"):
                    return f"<{name}>"
                return f"<GetAtt:{name}>" if "." in name else f"<Ref:{name}>"

            return re.sub(r"\$\{([^!}][^}]*)\}", sub, text)
        if key == "Fn::Select":
            index, items = arg
            rendered = render_intrinsics(items)
            if isinstance(rendered, list):
                return rendered[int(index)]
            return f"<Select:{index}:{_as_text(rendered)}>"
        if key.startswith("Fn::"):
            return f"<{key[4:]}:{json.dumps(render_intrinsics(arg), sort_keys=True)}>"
    return {k: render_intrinsics(v) for k, v in value.items()}


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise RenderError(f"cannot join a non-string template value into a manifest: {value!r}")


def _parse_json(value: Any, where: str) -> Any:
    text = render_intrinsics(value)
    if not isinstance(text, str):
        raise RenderError(f"{where}: expected a JSON string, got {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RenderError(f"{where}: not valid JSON after rendering intrinsics ({exc})") from None


def _group_names(resources: dict) -> dict[str, str]:
    """Logical id -> short group name: cluster prefix, `chart`/`manifest` infix and hash suffix removed."""
    cluster_prefixes = [_HASH_SUFFIX.sub("", lid) for lid, r in resources.items() if r["Type"] == "AWS::EKS::Cluster"]
    names: dict[str, str] = {}
    for lid, res in resources.items():
        if res["Type"] not in (MANIFEST_TYPE, HELM_TYPE):
            continue
        name = _HASH_SUFFIX.sub("", lid)
        for prefix in cluster_prefixes:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
        for infix in ("chart", "manifest"):
            if name.startswith(infix) and len(name) > len(infix) and name[len(infix)].isupper():
                name = name[len(infix):]
        names[lid] = name
    return names


def _embedded_objects(values: Any) -> list[dict]:
    found: list[dict] = []
    if isinstance(values, dict):
        if isinstance(values.get("apiVersion"), str) and isinstance(values.get("kind"), str):
            return [values]
        for v in values.values():
            found.extend(_embedded_objects(v))
    elif isinstance(values, list):
        for v in values:
            found.extend(_embedded_objects(v))
    return found


def extract_helm_releases(template: dict) -> dict[str, dict]:
    """Group name -> {release, chart, repository, version, namespace, values} for every Helm chart resource."""
    resources = template.get("Resources", {})
    names = _group_names(resources)
    releases: dict[str, dict] = {}
    for lid, res in resources.items():
        if res["Type"] != HELM_TYPE:
            continue
        props = res.get("Properties", {})
        values = _parse_json(props["Values"], f"{lid}.Values") if "Values" in props else {}
        releases[names[lid]] = {
            key: render_intrinsics(props.get(prop))
            for key, prop in (("release", "Release"), ("chart", "Chart"), ("repository", "Repository"),
                              ("version", "Version"), ("namespace", "Namespace"))
        } | {"values": values}
    return releases


def extract_manifests(template: dict) -> dict[str, list[dict]]:
    """Group name -> the Kubernetes objects that group applies (manifests and objects inside Helm values)."""
    resources = template.get("Resources", {})
    names = _group_names(resources)
    groups: dict[str, list[dict]] = {}
    for lid, res in resources.items():
        if res["Type"] == MANIFEST_TYPE:
            objects = _parse_json(res["Properties"]["Manifest"], f"{lid}.Manifest")
            if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
                raise RenderError(f"{lid}.Manifest: expected a JSON list of objects")
            groups[names[lid]] = objects
    for name, release in extract_helm_releases(template).items():
        embedded = _embedded_objects(release["values"])
        if embedded:
            groups[f"{name}-values"] = embedded
    return groups


def _stack_templates(assembly: Path) -> dict[str, dict]:
    manifest = json.loads((assembly / "manifest.json").read_text())
    templates: dict[str, dict] = {}
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") == "aws:cloudformation:stack":
            template_file = artifact["properties"]["templateFile"]
            templates[artifact_id] = json.loads((assembly / template_file).read_text())
    if not templates:
        raise RenderError(f"no stack templates in {assembly}: run `cdk synth` first")
    return templates


def render_assembly(assembly: Path, out: Path) -> list[Path]:
    """Write every stack's objects and Helm values under `out`; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.yaml"), *out.glob("helm/*.yaml")]:
        stale.unlink()
    written: list[Path] = []
    for stack, template in sorted(_stack_templates(assembly).items()):
        for group, objects in sorted(extract_manifests(template).items()):
            path = out / f"{stack}.{group}.yaml"
            path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
            written.append(path)
        for group, release in sorted(extract_helm_releases(template).items()):
            path = out / "helm" / f"{stack}.{group}.values.yaml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(yaml.safe_dump(release, sort_keys=False))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assembly", type=Path, default=Path("cdk.out"), help="cloud assembly directory")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="output directory for the YAML files")
    args = parser.parse_args(argv)
    try:
        written = render_assembly(args.assembly, args.out)
    except (RenderError, FileNotFoundError) as exc:
        print(f"render_manifests: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
