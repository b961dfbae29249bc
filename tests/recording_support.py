"""Recordings for tests: a conversation with a recording stored the way the server
stores a provider's (the sandbox adapter's download into the recording store, then
`media.recording_ready`), and WAV audio to fill one with."""

from __future__ import annotations

import io
import math
import wave
from datetime import timedelta
from pathlib import Path

from channels.base import Recording
from tests.app_support import Api


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit 400 Hz tone, as long as a call: playable audio, made fast."""
    period = rate // 400
    wave_period = b"".join(
        int(8000 * math.sin(2 * math.pi * n / period)).to_bytes(2, "little", signed=True)
        for n in range(period)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(wave_period * int(seconds * rate / period))
    return out.getvalue()


def at(api: Api, seconds: float) -> str:
    return (api.services.clock.now() + timedelta(seconds=seconds)).isoformat()


async def conversation(
    api: Api, cid: str, tenant: str | None = None, offered_to: str | None = None
) -> None:
    """A call created a minute ago; with `offered_to`, offered to that agent now."""
    events = [
        api.event("conversation.created", cid, at(api, -60), channel="call",
                  contact="+34911000200", customer={"name": "Ann"}),
    ]  # fmt: skip
    if offered_to:
        events += [
            api.event("routing.enqueued", cid, at(api, -50), team="sales"),
            api.event("routing.offered", cid, at(api, -40), agent_id=offered_to,
                      offer_id=f"o-{cid}", expires_at=at(api, 3600)),
        ]  # fmt: skip
    results = await api.post_events(events, tenant=tenant)
    assert {r["outcome"] for r in results} == {"applied"}, results


async def stored_recording(
    api: Api,
    folder: Path,
    cid: str,
    rid: str,
    data: bytes,
    tenant: str | None = None,
    content_type: str = "audio/wav",
    duration_s: float = 60.0,
) -> None:
    """`data` stored as recording `rid` of conversation `cid`, as a provider's would be."""
    tenant = tenant or api.tenant
    source = folder / f"{tenant}-{cid}-{rid}.source"
    source.write_bytes(data)
    recording = Recording(rid, duration_s, content_type, path=source)
    await api.services.recordings.fetch(
        tenant, api.services.sandboxes.runner(tenant).provider, recording
    )
    ready = api.event("media.recording_ready", cid, at(api, -30), recording_id=rid,
                      duration_s=duration_s, content_type=content_type)  # fmt: skip
    [result] = await api.post_events([ready], tenant=tenant)
    assert result["outcome"] == "applied", result
