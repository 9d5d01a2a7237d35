#!/usr/bin/env bash
# Join the per-arch images of this revision into one multi-arch index per flavor, tag it with the revision,
# then move the moving tag to it; see buildspecs/manifest.yml.
set -euo pipefail
# shellcheck source=buildspecs/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_vars REGISTRY REPOSITORY_PREFIX IMAGE_MATRIX MOVING_TAG SOURCE_REVISION BUILD_FINGERPRINT AWS_REGION
tag="$(image_tag)"

# IMAGE_MATRIX: space-separated "flavor=arch[,arch]" entries, e.g. "cuda=amd64,arm64 neuron=amd64".
read -ra entries <<<"${IMAGE_MATRIX}"
for entry in "${entries[@]}"; do
  flavor="${entry%%=*}"
  [ "${flavor}" != "${entry}" ] || die "IMAGE_MATRIX entry '${entry}' is not flavor=arch[,arch]"
  IFS=, read -ra archs <<<"${entry#*=}"
  [ "${#archs[@]}" -gt 0 ] || die "IMAGE_MATRIX entry '${entry}' lists no architecture"
  repository_name="${REPOSITORY_PREFIX}-${flavor}"
  repository="${REGISTRY}/${repository_name}"

  if image_exists "${repository_name}" "${tag}"; then
    echo "${repository}:${tag} is already published"
  else
    sources=()
    for arch in "${archs[@]}"; do
      image_exists "${repository_name}" "${tag}-${arch}" || die "${repository}:${tag}-${arch} is missing; the build stage did not publish it"
      sources+=("${repository}:${tag}-${arch}")
    done
    docker buildx imagetools create --tag "${repository}:${tag}" "${sources[@]}"
  fi
  # The moving tag is the only mutable tag (ECR exclusion filter); it always follows the newest revision.
  docker buildx imagetools create --tag "${repository}:${MOVING_TAG}" "${repository}:${tag}"
  docker buildx imagetools inspect "${repository}:${tag}"
done
