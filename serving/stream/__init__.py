"""The camera-frame stream over two transports: the WebSocket route (websocket.py) and WebRTC (webrtc.py signalling,
rtc_session.py media, icebind.py ICE ports and addresses), what both share (session.py: config parsing and one
frame through the engine; protocol.py), the registry, limits and metrics (hub.py), the per-stream frame runner
(frames.py) and the device JPEG codec (codec.py).
May import serving.engine, serving.backends (base), serving.model, serving.auth, serving.core."""
