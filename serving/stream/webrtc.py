"""POST /v1/webrtc (WHIP-style signalling) and DELETE /v1/webrtc/{id}: the frame stream over WebRTC.

The client POSTs its SDP offer (Content-Type: application/sdp) with a video track (VP8 or H.264) and a data channel
labelled `config`; the answer comes back as 201 with the SDP answer and a Location naming the session, which a
DELETE ends. Auth is the gateway's, as for every HTTP route; 503 (not ready, draining), 404 (no streams here) and
429 (--max-streams, shared with /v1/stream) come before any ICE or media. Non-trickle: the answer carries every
candidate, so one round trip sets the session up. Media is DTLS-SRTP (aiortc); the ports and the advertised
address are serving.stream.icebind's.
"""
from __future__ import annotations

import asyncio
import logging
import secrets

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from serving.engine.state import ServerState

log = logging.getLogger("serving.stream")

SDP_MEDIA = "application/sdp"
# The offer's size bound: a browser's offer with every codec is ~5 KB.
MAX_OFFER_BYTES = 64 * 1024

try:  # the Neuron image has no WebRTC stack (no img2img there, so no streams): the route then answers 404
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from serving.stream import icebind
    from serving.stream.rtc_session import RtcSession
except ImportError:  # pragma: no cover - exercised in the Neuron image only
    RTCPeerConnection = None


def _error(status: int, message: str, type_: str, param: str | None = None, headers: dict | None = None):
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": status}},
                        status_code=status, headers=headers)


class OfferRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def add_webrtc_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings
    sessions: dict[str, RtcSession] = {}
    if RTCPeerConnection is not None and (s.webrtc_port_range or s.webrtc_bind_host):
        icebind.configure(s.webrtc_port_range, [s.webrtc_bind_host] if s.webrtc_bind_host else None)

    def refused(reason: str) -> None:
        if state.streams.metrics:
            state.streams.metrics.refused.labels(reason).inc()

    @app.post("/v1/webrtc", name="webrtc", status_code=201, summary="WebRTC frame stream: SDP offer in, SDP answer out",
              response_class=Response,
              responses={201: {"content": {SDP_MEDIA: {"schema": {"type": "string"}}}, "description": "SDP answer"},
                         **{code: {"description": text} for code, text in (
                             (400, "not an SDP offer with a video track"), (401, "missing or invalid API key"),
                             (404, "no frame streams here"), (429, "--max-streams reached"),
                             (503, "not ready or draining"))}})
    async def offer(request: Request):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != SDP_MEDIA:
            return _error(400, f"the body must be an SDP offer sent as Content-Type: {SDP_MEDIA} (got "
                          f"{media or 'none'!r})", "invalid_request_error", "sdp")
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if len(body) > MAX_OFFER_BYTES or not text.lstrip().startswith("v=0") or "m=video" not in text:
            return _error(400, "sdp: not an SDP offer with a video track (v=0 ... m=video), at most "
                          f"{MAX_OFFER_BYTES} bytes", "invalid_request_error", "sdp")
        hub = state.streams
        if not state.ready or state.engine.backend is None:
            refused("not_ready")
            return _error(503, f"not ready: {state.phase}", "unavailable", headers={"Retry-After": "1"})
        if RTCPeerConnection is None or not state.engine.backend.supports_img2img or not s.max_streams:
            refused("unsupported")
            return _error(404, "this endpoint does not serve WebRTC frame streams "
                          f"({state.engine.backend.name} backend, --max-streams {s.max_streams}"
                          f"{', no WebRTC stack in this image' if RTCPeerConnection is None else ''})", "not_found")
        session = RtcSession(state, secrets.token_urlsafe(12))
        if not hub.try_open(session):
            refused("max_streams")
            return _error(429, f"this server already has --max-streams ({s.max_streams}) open streams; retry later "
                          "or on another endpoint", "rate_limit_error", headers={"Retry-After": "5"})
        try:
            answer = await _negotiate(session, text)
            public = s.webrtc_public_host
            if public == "node":
                public = await hub.public_address() if hub.public_address else None
            answer = icebind.advertise(answer, public)
        except OfferRefused as exc:
            await session.pc.close()
            hub.closed(session)
            refused("bad_offer")
            return _error(400, exc.message, "invalid_request_error", "sdp")
        except Exception as exc:  # no free port, an inventory failure: the session never started
            if session.pc is not None:
                await session.pc.close()
            hub.closed(session)
            log.warning("webrtc offer failed", extra={"fields": {"error": repr(exc)[:300]}})
            return _error(503, f"could not set up the WebRTC session: {exc}", "unavailable",
                          headers={"Retry-After": "2"})
        sessions[session.id] = session
        task = asyncio.ensure_future(session.run())
        task.add_done_callback(lambda _: sessions.pop(session.id, None))
        log.info("webrtc session open", extra={"fields": {"session": session.id, "streams": len(hub.sessions)}})
        return Response(answer, status_code=201, media_type=SDP_MEDIA,
                        headers={"Location": f"/v1/webrtc/{session.id}"})

    @app.delete("/v1/webrtc/{session_id}", name="webrtc_session", status_code=204,
                summary="End a WebRTC frame stream", response_class=Response,
                responses={204: {"description": "ended"}, 401: {"description": "missing or invalid API key"},
                           404: {"description": "no such session"}})
    async def end(session_id: str):
        session = sessions.get(session_id)
        if session is None:
            return _error(404, f"no WebRTC session {session_id!r} (ended already, or on another endpoint)",
                          "not_found", "session_id")
        await session.close_now(1000, "ended by DELETE")
        # The session ends on its own task; a peer connection slow to close must not hold the DELETE.
        await asyncio.wait([asyncio.ensure_future(session.finished.wait())], timeout=5)
        return Response(status_code=204)


async def _negotiate(session: "RtcSession", offer: str) -> str:
    # No STUN or TURN server: the server's candidates are its own (or advertised public) addresses.
    pc = session.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks = []

    @pc.on("datachannel")
    def on_datachannel(channel):
        if channel.label == "config":
            session.attach_channel(channel)

    @pc.on("track")
    def on_track(track):
        if track.kind == "video" and not tracks:
            tracks.append(track)
            session.attach_track(track)
            pc.addTrack(session.output)

    pc.on("connectionstatechange", lambda: session.on_state(pc.connectionState))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except Exception as exc:  # aiortc's SDP parser raises ValueError, KeyError, IndexError... on bad input
        raise OfferRefused(f"sdp: the offer could not be applied: {exc!r}"[:500]) from None
    if not tracks:
        raise OfferRefused("sdp: the offer has no video track this server can receive (VP8 or H.264)")
    answer = await pc.createAnswer()
    await pc.setLocalDescription(answer)
    return pc.localDescription.sdp
