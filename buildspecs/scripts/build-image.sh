#!/usr/bin/env bash
# Build and push one (flavor, arch) serving image with a registry layer cache; see buildspecs/build-image.yml.
set -euo pipefail
# shellcheck source=buildspecs/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_vars FLAVOR ARCH REPOSITORY_URI SOURCE_REVISION BUILD_FINGERPRINT MODEL_SOURCE AWS_REGION
case "${FLAVOR}" in cuda | neuron | cpu) ;; *) die "FLAVOR must be cuda, neuron or cpu (got '${FLAVOR}')" ;; esac
case "${ARCH}" in amd64 | arm64) ;; *) die "ARCH must be amd64 or arm64 (got '${ARCH}')" ;; esac

tag="$(image_tag)"
repository_name="${REPOSITORY_URI#*/}"
image="${REPOSITORY_URI}:${tag}-${ARCH}"
# One cache per architecture: each build runs on a native host and cannot reuse the other's layers.
cache_ref="${REPOSITORY_URI}:cache-${ARCH}"

if image_exists "${repository_name}" "${tag}-${ARCH}"; then
  echo "${image} is already published; skipping the build"
  exit 0
fi

args=(
  --file serving/Dockerfile
  --target "${FLAVOR}"
  --platform "linux/${ARCH}"
  --build-context requirements=.
  --cache-from "type=registry,ref=${cache_ref}"
  # image-manifest/oci-mediatypes: the cache manifest format ECR accepts; mode=max also exports the
  # weights and neuron-compile stages, which never reach the final image as their own layers.
  --cache-to "type=registry,ref=${cache_ref},mode=max,image-manifest=true,oci-mediatypes=true"
  # Plain per-arch manifests: the manifest stage joins them into one index with imagetools.
  --provenance=false
  --tag "${image}"
  --push
  --progress=plain
)
for name in MODEL_SOURCE MODEL_ID MODEL_REVISION MODEL_S3_URI AWS_REGION \
  NEURON_HEIGHT NEURON_WIDTH NEURON_BATCH_SIZE NEURON_DTYPE; do
  if [ -n "${!name:-}" ]; then
    args+=(--build-arg "${name}=${!name}")
  fi
done

# HF_TOKEN is resolved by CodeBuild from Secrets Manager; BuildKit mounts it only into the download step.
if [ -n "${HF_TOKEN:-}" ]; then
  args+=(--secret "id=hf_token,env=HF_TOKEN")
fi

if [ "${MODEL_SOURCE}" = "s3" ]; then
  require_vars MODEL_S3_URI
  # The build container cannot reach CodeBuild's credential endpoint, so the role's short-lived
  # credentials go in as a BuildKit secret file that is deleted when this script exits.
  secrets_dir="$(mktemp -d)"
  trap 'rm -rf "${secrets_dir}"' EXIT
  umask 077
  aws configure export-credentials --format process | python3 -c '
import json, sys
c = json.load(sys.stdin)
print("[default]")
print("aws_access_key_id = " + c["AccessKeyId"])
print("aws_secret_access_key = " + c["SecretAccessKey"])
print("aws_session_token = " + c.get("SessionToken", ""))
' >"${secrets_dir}/credentials"
  args+=(--secret "id=aws_credentials,src=${secrets_dir}/credentials")
fi

docker buildx build "${args[@]}" serving
echo "pushed ${image}"
