"""The serve command's --help text, one entry per Settings field (the flag and its SERVING_* variable share it)."""
from __future__ import annotations

HELP = {
    "model": "local diffusers directory (or compiled Neuron directory for --device neuron)",
    "device": "accelerator; auto picks neuron, then cuda, then cpu",
    "host": "bind address of the public port",
    "metrics_host": "bind address of the metrics port (default: --host)",
    "port": "public HTTP port",
    "metrics_port": "Prometheus /metrics and JSON /load port (never expose it publicly)",
    "api_key_file": "file holding the bearer key clients must send",
    "api_key_secret_arn": "Secrets Manager secret holding the bearer key (read with the pod's identity)",
    "max_queue": "requests that may wait beyond the running ones; more get 429",
    "max_concurrency": "generations running at once",
    "request_timeout": "seconds until a request gets 504 and its generation is aborted",
    "drain_timeout": "seconds SIGTERM waits for admitted requests and responses being sent; exit follows within 1 s",
    "header_timeout": "seconds a connection may take to send complete request headers before it is closed",
    "keepalive_timeout": "seconds an idle keep-alive connection stays open",
    "max_connections": "open connections on the public port; more are answered 503 and closed at once",
    "max_request_cost": "largest width x height x steps x images (x2 with guidance) accepted; 0 = the largest "
                        "default-size request (model default size and steps, --max-images images)",
    "skip_warmup": "report ready without the warm-up generation (cold-start benchmarks)",
    "log_prompts": "include prompt text in the logs (request lines and library warnings); off by default",
    "dtype": "weights dtype; auto is float16 on cuda, float32 on cpu",
    "compile": "cuda: torch.compile the UNet and VAE for the warmed shapes (--warmup-sizes x guidance on/off x "
               "1..--max-images images); other requests run eagerly",
    "compile_mode": "cuda: torch.compile mode (default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs); "
                    "default: max-autotune with --cuda-graphs, else max-autotune-no-cudagraphs",
    "compile_cache_dir": "cuda: directory of saved compile artifacts (image layer or node-local path), loaded at start "
                         "when the key matches and written after warm-up",
    "compile_cache_s3": "cuda: s3://bucket/prefix/ for the same artifacts, read and written with the pod's identity; "
                        "S3 errors are logged and the server compiles instead",
    "cuda_graphs": "cuda: capture CUDA graphs (few-step models)",
    "tiny_vae": "cuda: local directory of a tiny autoencoder (TAESD) to decode with",
    "deepcache_interval": "cuda: reuse deep UNet features every N steps (0 disables)",
    "inventory_service": "Service name whose endpoints GET /v1/endpoints lists",
    "inventory_namespace": "namespace of --inventory-service (default: the pod's own)",
    "inventory_node_port": "nodePort devices call (default: read from the Service)",
    "inventory_node_domain": "list nodes by DNS name <node-name with . as ->.<this domain> (publicly trusted TLS) "
                             "instead of by IP",
    "inventory_file": "JSON list of endpoints GET /v1/endpoints answers, re-read when it changes (local runs without "
                      "Kubernetes)",
    "tls_cert_file": "PEM certificate chain of the public port; with --tls-key-file the port speaks only TLS 1.2+ "
                     "and a rotated file is picked up by new connections without a restart",
    "tls_key_file": "PEM private key of --tls-cert-file",
    "tls_ca_file": "PEM CA certificate whose SPKI pin /v1/endpoints publishes (private-CA deployments)",
    "tls_server_name": "name devices verify in the certificate, published by /v1/endpoints",
    "min_image_size": "smallest width/height accepted",
    "max_image_size": "largest width/height accepted",
    "max_steps": "largest num_inference_steps accepted",
    "max_images": "largest n (images per request) accepted",
    "max_prompt_length": "longest prompt accepted, in characters",
    "default_steps": "override the model's default num_inference_steps",
    "default_guidance_scale": "override the model's default guidance_scale",
    "default_width": "override the model's default width",
    "default_height": "override the model's default height",
    "scheduler": "diffusers scheduler class name to use instead of the model's",
    "warmup_sizes": "sizes to warm up (and compile) before ready, e.g. 512x512,768x768; default: the model's size",
    "log_level": "debug, info, warning or error",
    "max_streams": "concurrent frame streams, WebSocket and WebRTC together; more get 429; 0 disables streams",
    "stream_idle_timeout": "seconds without a client message after which a stream is closed",
    "max_frame_bytes": "largest encoded frame accepted on a stream",
    "stream_vae": "local AutoencoderTiny (TAESD) directory for stream frames (default: MODEL/stream_vae if present, "
                  "else the model's VAE)",
    "stream_warmup_size": "stream frame size to warm up (and on cuda capture) before ready, e.g. 512x512; default: "
                          "the model's default size on cuda, none elsewhere",
    "webrtc_ports": "UDP port range ICE binds WebRTC media to, e.g. 40000-40015 (what a hostPort exposes); "
                    "default: ephemeral ports",
    "webrtc_public_host": "address advertised in ICE candidates instead of the bound one (1:1 NAT); 'node' reads "
                          "the ExternalIP of the node NODE_NAME through the inventory; default: none",
    "webrtc_bind_host": "address ICE binds to; default: every non-loopback interface address",
    "stream_eager": "cuda: run stream frames eagerly instead of replaying captured CUDA graphs",
}
