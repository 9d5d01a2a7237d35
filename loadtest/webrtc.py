"""A WebRTC frame-stream client (aiortc): the tests' and the benchmark's client of POST /v1/webrtc.

It offers one sendrecv video track (frames from a list, paced at ``fps``; 0: as fast as the encoder takes them)
and the `config` data channel, posts the offer, applies the answer, and collects what comes back: the generated
frames (as RGB arrays) and every channel message. Nothing but the given URL's host is contacted: no STUN server,
host candidates on ``bind_host`` only.
"""
from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aioice import ice
from av import VideoFrame


class FrameSource(VideoStreamTrack):
    """Frames from a list, cycled, at ``fps`` (0: as fast as the sender asks)."""

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0):
        super().__init__()
        self.frames, self.fps, self.sent = frames, fps, 0
        self._start = time.monotonic()

    async def recv(self) -> VideoFrame:
        if self.fps:
            due = self._start + self.sent / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
        frame = VideoFrame.from_ndarray(self.frames[self.sent % len(self.frames)], format="rgb24")
        frame.pts = int((time.monotonic() - self._start) * 90000)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


@dataclass
class RtcClient:
    url: str
    frames: list[np.ndarray]
    fps: float = 30.0
    codec: str | None = None  # "VP8" or "H264": the only codec offered; None: aiortc's order (VP8 first)
    api_key: str | None = None
    bind_host: str = "127.0.0.1"
    received: list = field(default_factory=list)  # (monotonic time, RGB array)
    messages: list = field(default_factory=list)  # parsed channel messages
    location: str | None = None
    answer: str | None = None

    async def open(self, config: dict | None = None, timeout: float = 20.0) -> httpx.Response:
        # aioice gathers on every non-loopback interface address (and never 127.0.0.1): this client uses one.
        ice.get_host_addresses = lambda use_ipv4, use_ipv6: [self.bind_host]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("config")
        self._opened = asyncio.Event()
        self.channel.on("open", self._opened.set)
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))
        self.source = FrameSource(self.frames, self.fps)
        transceiver = self.pc.addTransceiver(self.source, direction="sendrecv")
        if self.codec:
            codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
                      if c.mimeType.lower() == f"video/{self.codec.lower()}"]
            transceiver.setCodecPreferences(codecs)
        self._readers = []
        self.pc.on("track", lambda track: self._readers.append(asyncio.ensure_future(self._read(track))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(self.url + "/v1/webrtc", content=self.pc.localDescription.sdp, headers=headers)
        if response.status_code != 201:
            await self.pc.close()
            return response
        self.location, self.answer = response.headers["location"], response.text
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        await asyncio.wait_for(self._opened.wait(), timeout)
        if config is not None:
            self.send(config)
        return response

    def send(self, config: dict) -> None:
        self.channel.send(json.dumps(config))

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # noqa: BLE001 - the track ended
                return
            self.received.append((time.monotonic(), frame.to_ndarray(format="rgb24")))

    def stats(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "frame"]

    def errors(self) -> list[dict]:
        return [m["error"] for m in self.messages if m.get("type") == "error"]

    async def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; messages: {self.messages[-5:]}")
            await asyncio.sleep(0.05)

    async def delete(self) -> int:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.delete(self.url + self.location, headers=headers)
        return response.status_code

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()
