"""The camera-frame stream: the WebSocket route and its protocol (websocket.py, protocol.py), the stream registry
and its metrics (hub.py) and the per-stream frame runner (frames.py).
May import serving.engine, serving.backends (base), serving.core."""
