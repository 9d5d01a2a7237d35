"""The fleet as devices see it: /v1/endpoints' inventory of ready pods and nodes, read from the Kubernetes API
(or a static file). May import serving.core only."""
