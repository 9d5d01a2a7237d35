"""The HTTP surface on port 8080: routes, request/response models, the gateway middleware, connection limits, TLS.

- app.py: create_app, every route family mounted behind gateway.py (request id, auth, body limit, access log,
  metrics); generation.py (/generate, /v1/images/generations), edits.py (/v1/images/edits), probes.py
  (/healthz, /readyz, /v1/endpoints, the playground page); the stream's route comes from serving.stream
- responses.py: the JSON error shape and handlers; schemas.py: request/response models
- connections.py: the bounded h11 protocol; tls.py: the serving certificate and its reload; devcerts.py: local PKI
May import serving.stream, serving.auth, serving.engine, serving.backends (types only), serving.model, serving.core.
"""
