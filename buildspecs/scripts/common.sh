# Shared helpers for the buildspec scripts (sourced, never executed directly).
# shellcheck shell=bash

die() {
  echo "error: $*" >&2
  exit 1
}

# Fail early, naming the variable, when ImagePipelineStack did not provide one.
require_vars() {
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      die "CodeBuild environment variable ${name} is not set; ImagePipelineStack defines it on the project or action"
    fi
  done
}

# The immutable tag of one build: <source revision, 12 chars>-<build config fingerprint, 8 hex>. The
# revision is a git commit id (CodeConnections) or the seeded archive's ETag (S3 source); the fingerprint
# (set by ImagePipelineStack) covers the model and compile settings, so changing the model in the config
# publishes a new tag even when the source is unchanged. Neither can match the moving tag or cache-*.
image_tag() {
  local revision
  revision="$(printf '%s' "${SOURCE_REVISION}" | tr -cd '[:alnum:]' | cut -c1-12)"
  if [ -z "${revision}" ]; then
    die "SOURCE_REVISION '${SOURCE_REVISION}' has no characters usable in an image tag"
  fi
  if [[ ! "${BUILD_FINGERPRINT}" =~ ^[0-9a-f]{8}$ ]]; then
    die "BUILD_FINGERPRINT must be 8 lowercase hex characters (got '${BUILD_FINGERPRINT}')"
  fi
  printf '%s-%s\n' "${revision}" "${BUILD_FINGERPRINT}"
}

# True when REPOSITORY already holds TAG. Tags are immutable, so an existing tag means this revision was
# already published (a retried execution) and must not be pushed again.
image_exists() {
  local repository="$1" tag="$2" output
  if output="$(aws ecr describe-images --repository-name "${repository}" --image-ids "imageTag=${tag}" 2>&1)"; then
    return 0
  fi
  if [[ "${output}" == *ImageNotFoundException* ]]; then
    return 1
  fi
  die "cannot check ${repository}:${tag}: ${output}"
}

ecr_login() {
  local host="$1"
  aws ecr get-login-password --region "${AWS_REGION}" | docker login --username AWS --password-stdin "${host}"
}
