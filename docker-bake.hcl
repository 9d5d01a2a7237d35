# Build every serving image locally, for every platform the pipeline publishes:
#
#   docker buildx bake                       # cuda (amd64), neuron (amd64), cpu (amd64+arm64)
#   docker buildx bake cpu-amd64 --load      # one platform into the local image store
#   HF_TOKEN=hf_xxx REGISTRY=123456789012.dkr.ecr.us-west-2.amazonaws.com TAG=dev docker buildx bake --push
#
# Multi-platform targets need a docker-container builder (`docker buildx create --use`) and QEMU for the
# foreign architecture. Defaults mirror the `pipeline` section of cdk.json; override any of them through
# the environment (MODEL_REVISION=<commit> docker buildx bake). The pipeline itself runs the same
# Dockerfile through buildspecs/build-image.yml, one native builder per architecture.

variable "REGISTRY" {
  # Empty: local image names. Otherwise the ECR registry host, e.g. 123456789012.dkr.ecr.us-west-2.amazonaws.com
  default = ""
}
variable "REPOSITORY_PREFIX" {
  default = "edge-diffusion"
}
variable "TAG" {
  default = "dev"
}
variable "MODEL_SOURCE" {
  default = "hf"
}
variable "MODEL_ID" {
  default = "stabilityai/sd-turbo"
}
variable "MODEL_REVISION" {
  default = "main"
}
variable "MODEL_S3_URI" {
  default = ""
}
variable "AWS_REGION" {
  default = "us-west-2"
}
variable "AWS_CREDENTIALS_FILE" {
  # Only for MODEL_SOURCE=s3: a credentials file with (short-lived) keys that can read MODEL_S3_URI.
  default = ""
}
variable "NEURON_HEIGHT" {
  default = "512"
}
variable "NEURON_WIDTH" {
  default = "512"
}
variable "NEURON_BATCH_SIZE" {
  default = "1"
}
variable "NEURON_DTYPE" {
  default = "bf16"
}

function "image" {
  params = [flavor]
  result = REGISTRY != "" ? "${REGISTRY}/${REPOSITORY_PREFIX}-${flavor}:${TAG}" : "${REPOSITORY_PREFIX}-${flavor}:${TAG}"
}

group "default" {
  targets = ["cuda", "neuron", "cpu"]
}

target "_common" {
  context    = "serving"
  dockerfile = "Dockerfile"
  # Only requirements-serving.txt is read from the repository root (BuildKit transfers just that path).
  contexts = {
    requirements = "."
  }
  args = {
    MODEL_SOURCE   = MODEL_SOURCE
    MODEL_ID       = MODEL_ID
    MODEL_REVISION = MODEL_REVISION
    MODEL_S3_URI   = MODEL_S3_URI
    AWS_REGION     = AWS_REGION
  }
  secret = compact([
    "id=hf_token,env=HF_TOKEN",
    AWS_CREDENTIALS_FILE != "" ? "id=aws_credentials,src=${AWS_CREDENTIALS_FILE}" : "",
  ])
}

# amd64 only: no NodePool launches an arm64 NVIDIA node (edge_config.pipeline's default targets say why).
target "cuda" {
  inherits  = ["_common"]
  target    = "cuda"
  platforms = ["linux/amd64"]
  tags      = [image("cuda")]
}

target "neuron" {
  inherits  = ["_common"]
  target    = "neuron"
  platforms = ["linux/amd64"]
  tags      = [image("neuron")]
  args = {
    NEURON_HEIGHT     = NEURON_HEIGHT
    NEURON_WIDTH      = NEURON_WIDTH
    NEURON_BATCH_SIZE = NEURON_BATCH_SIZE
    NEURON_DTYPE      = NEURON_DTYPE
  }
}

target "cpu" {
  inherits  = ["_common"]
  target    = "cpu"
  platforms = ["linux/amd64", "linux/arm64"]
  tags      = [image("cpu")]
}

# Single-platform variants (loadable with --load), named like the pipeline's CodeBuild actions.
target "cuda-amd64" {
  inherits  = ["cuda"]
  platforms = ["linux/amd64"]
  tags      = ["${image("cuda")}-amd64"]
}

target "neuron-amd64" {
  inherits  = ["neuron"]
  platforms = ["linux/amd64"]
  tags      = ["${image("neuron")}-amd64"]
}

target "cpu-amd64" {
  inherits  = ["cpu"]
  platforms = ["linux/amd64"]
  tags      = ["${image("cpu")}-amd64"]
}

target "cpu-arm64" {
  inherits  = ["cpu"]
  platforms = ["linux/arm64"]
  tags      = ["${image("cpu")}-arm64"]
}
