#!/usr/bin/env python3
"""A small example client of Inside: one coaching session from sign-up to report.

It signs up two users (random e-mail addresses), puts them in a relationship and grants both
consents, starts a session, opens both members' WebSockets, streams feature frames (fast
speech from the first member, overlapping speech from the second, so the gateway answers
with SLOW_DOWN and LET_PARTNER_FINISH nudges) and an audio recording from the first member,
prints every nudge and speaker event as it arrives, finalizes the session, waits for the
report and prints a short summary.

    pip install -r requirements.txt
    python inside_client.py --base-url http://127.0.0.1:8000

Audio: a 16-bit WAV file is read with the standard library and streamed as raw `pcm_s16le`
in 100 ms chunks at real-time pace; a FLAC, Ogg Vorbis or MP3 file is sent as it is (the
gateway decodes those itself). Speaker events need a gateway with a speaker model
(`ECAPA_MODEL_DIR`).

For CI, `--expect-nudges N` and `--expect-speaker-events` make the run fail (exit 1) when
fewer nudges or no speaker event came back. Exit codes: 0 done, 1 something expected did not
happen or the API answered with an error, 2 bad arguments.

Python 3.11+, `websockets` for the sockets; HTTP with the standard library (urllib).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("error: the 'websockets' package is missing: pip install -r requirements.txt")

HERE = Path(__file__).resolve().parent
DEFAULT_AUDIO = HERE.parent.parent / "engine" / "tests" / "fixtures" / "audio" / "speech.flac"
COMPRESSED = {".flac": "flac", ".ogg": "ogg", ".oga": "ogg", ".mp3": "mp3"}
T0 = time.monotonic()


class Failure(Exception):
    """Ends the run with a message and exit code 1."""


class ApiError(Failure):
    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status, self.body = status, body
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            what = f"{err.get('code')}: {err.get('message')}"
            if err.get("details") is not None:
                what += f" (details: {json.dumps(err['details'])})"
        else:
            what = str(body)[:500] or "(empty body)"
        super().__init__(f"{method} {path} answered {status} {what}")


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


# --- REST --------------------------------------------------------------------------------


class Api:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             expect: tuple[int, ...] = (200, 201, 202, 204)) -> tuple[int, Any]:
        """One JSON request; retries a 503 `busy` (the gateway's bcrypt queue) a few times."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        if token:
            headers["authorization"] = f"Bearer {token}"
        for attempt in range(5):
            req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as res:
                    status, raw = res.status, res.read()
            except urllib.error.HTTPError as e:
                status, raw = e.code, e.read()
                retry_after = e.headers.get("retry-after")
                if status == 503 and attempt < 4:
                    time.sleep(min(float(retry_after or 1), 5.0))
                    continue
                if status == 429:
                    raise Failure(f"{ApiError(method, path, status, decode(raw))} "
                                  f"(rate limited; retry after {retry_after or '?'} s)") from None
            except urllib.error.URLError as e:
                raise Failure(f"cannot reach the gateway at {self.base}: {e.reason}") from None
            except (TimeoutError, ConnectionError) as e:
                raise Failure(f"{method} {path}: {e}") from None
            parsed = decode(raw)
            if status not in expect:
                raise ApiError(method, path, status, parsed)
            return status, parsed
        raise Failure(f"{method} {path}: the gateway stayed busy")  # pragma: no cover


def decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


@dataclass
class Member:
    label: str
    email: str
    token: str
    user_id: str
    nudges: list[dict] = field(default_factory=list)
    close_code: int | None = None
    pongs: int = 0
    audio_refused: bool = False


def sign_up(api: Api, label: str) -> Member:
    email = f"inside-example-{label.lower()}-{secrets.token_hex(6)}@example.com"
    _, pair = api.call("POST", "/v1/auth/signup", body={
        "email": email, "password": secrets.token_urlsafe(18), "name": label})
    return Member(label, email, pair["access_token"], pair["user"]["id"])


# --- WebSocket ---------------------------------------------------------------------------


class Session:
    """Both members' sockets and what came back on them."""

    def __init__(self, sid: str, members: list[Member]):
        self.sid = sid
        self.members = members
        self.by_id = {m.user_id: m for m in members}
        self.speaker_events: list[dict] = []
        self._seen_speaker: set[Any] = set()
        self.errors: list[tuple[str, dict]] = []
        self.audio_unavailable = False
        self.changed = asyncio.Event()
        self.participants: set[str] = set()

    def name(self, user_id: str | None) -> str:
        if user_id is None:
            return "unattributed"
        m = self.by_id.get(user_id)
        return m.label if m else user_id

    def handle(self, member: Member, msg: dict) -> None:
        kind, payload = msg.get("type"), msg.get("payload") or {}
        if kind == "server.nudge":
            member.nudges.append(payload)
            seq = payload.get("frame_seq")
            log(f"nudge   -> {member.label}: {payload.get('nudge_type')} "
                f"(intensity {payload.get('intensity')}) \"{payload.get('message')}\""
                + (f" [frame seq {seq}]" if seq is not None else ""))
        elif kind == "server.speaker":
            # every member's socket gets each speaker event: print it once
            key = msg.get("event_id") or (payload.get("start_ms"), payload.get("end_ms"))
            if key in self._seen_speaker:
                return
            self._seen_speaker.add(key)
            self.speaker_events.append(payload)
            span = (f"{payload.get('start_ms', 0) / 1000:.2f}-"
                    f"{payload.get('end_ms', 0) / 1000:.2f} s of the stream")
            if payload.get("user_id") is None:
                log(f"speaker : someone spoke {span} (no enrolled voiceprint matched)")
            else:
                log(f"speaker : {self.name(payload['user_id'])} spoke {span} "
                    f"(score {payload.get('score', 0):.3f})")
        elif kind == "server.session_state":
            now = set(payload.get("participants") or [])
            if now == self.participants:  # each socket hears every join: print changes once
                return
            self.participants = now
            names = ", ".join(sorted(self.name(u) for u in self.participants)) or "nobody"
            log(f"state   : in the session: {names}")
        elif kind == "server.pong":
            member.pongs += 1
        elif kind == "server.error":
            if payload.get("code") in ("audio_unavailable", "invalid_audio_start"):
                member.audio_refused = True
            if payload.get("code") == "audio_unavailable":
                self.audio_unavailable = True
                log(f"notice  : {member.label}'s audio was refused: {payload.get('message')} "
                    "(start the gateway with ECAPA_MODEL_DIR for speaker events)")
            else:
                self.errors.append((member.label, payload))
                log(f"error   <- {member.label}: {payload.get('code')}: {payload.get('message')}")
        self.changed.set()

    async def read(self, member: Member, ws: Any) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        log(f"error   <- {member.label}: not JSON: {raw[:200]}")
                        continue
                    self.handle(member, msg)
        except ConnectionClosed:
            pass
        member.close_code = ws.close_code
        self.changed.set()

    async def wait_for(self, done: Any, timeout: float) -> bool:
        """Waits until `done()` holds or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return done()
        return True


def ws_url(base_url: str, sid: str, token: str) -> str:
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urllib.parse.urlencode({"token": token})
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"{parts.path}/v1/sessions/{sid}/ws", query, ""))


async def open_socket(base_url: str, sid: str, member: Member) -> Any:
    try:
        return await ws_connect(ws_url(base_url, sid, member.token), open_timeout=10,
                                max_size=2**20)
    except InvalidStatus as e:
        body = decode(e.response.body or b"")
        raise ApiError("GET", f"/v1/sessions/{sid}/ws ({member.label}'s socket)",
                       e.response.status_code, body) from None
    except (OSError, TimeoutError, InvalidURI) as e:
        raise Failure(f"cannot open {member.label}'s WebSocket: {e}") from None


def envelope(kind: str, sid: str, payload: dict) -> str:
    return json.dumps({"type": kind, "sid": sid, "payload": payload})


async def stream_frames(ws: Any, sid: str, count: int, role: str, interval: float) -> None:
    """Feature frames, the first half calm, the second half over a threshold.

    `role` "fast": speaking_rate 4.5 words/s over the default 3.0 -> SLOW_DOWN.
    `role` "overlap": overlap_ratio 0.6 over the default 0.3 -> LET_PARTNER_FINISH.
    The gateway sends at most one nudge per NUDGE_RATE_LIMIT_SECONDS (10) per member."""
    start_ms = int(time.time() * 1000)
    for seq in range(1, count + 1):
        hot = seq > count // 2
        rate, overlap = (2.2, 0.05)
        if hot and role == "fast":
            rate = 4.5
        if hot and role == "overlap":
            overlap = 0.6
        await ws.send(envelope("client.feature_frame", sid, {
            "timestamp_ms": start_ms + int(seq * interval * 1000),
            "speaking_rate": rate, "overlap_ratio": overlap, "seq": seq}))
        await asyncio.sleep(interval)


def read_audio(path: Path) -> tuple[dict, list[bytes], float]:
    """(audio_start payload, binary chunks, seconds between chunks)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".wav":
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                    raise Failure(f"{path}: only 16-bit PCM WAV is streamed as pcm_s16le "
                                  f"(this one has {8 * w.getsampwidth()}-bit {w.getcomptype()})")
                rate, channels = w.getframerate(), w.getnchannels()
                pcm = w.readframes(w.getnframes())
            step = rate * channels * 2 // 10  # 100 ms
            chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
            return ({"codec": "pcm_s16le", "sample_rate": rate, "channels": channels},
                    chunks, 0.1)
        if suffix in COMPRESSED:
            data = path.read_bytes()
            return ({"codec": COMPRESSED[suffix]},
                    [data[i:i + 4096] for i in range(0, len(data), 4096)], 0.01)
    except (OSError, wave.Error, EOFError) as e:
        raise Failure(f"cannot read the audio file {path}: {e}") from None
    raise Failure(f"{path}: use a .wav (16-bit PCM), .flac, .ogg or .mp3 file")


async def stream_audio(ws: Any, session: Session, member: Member, start: dict,
                       chunks: list[bytes], pace: float) -> None:
    # The gateway answers messages in order: once the pong after audio_start is back, an
    # error for audio_start (no speaker model, bad parameters) would have come before it.
    pongs = member.pongs
    await ws.send(envelope("client.audio_start", session.sid, start))
    await ws.send(envelope("client.ping", session.sid, {}))
    if not await session.wait_for(lambda: member.pongs > pongs or member.audio_refused, 10):
        raise Failure("no answer to client.audio_start and client.ping within 10 s")
    if member.audio_refused:
        return
    for chunk in chunks:
        await ws.send(chunk)
        await asyncio.sleep(pace)
    await ws.send(envelope("client.audio_stop", session.sid, {}))


# --- the run -----------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    api = Api(args.base_url)
    audio = None if args.no_audio else read_audio(Path(args.audio))
    _, health = api.call("GET", "/health", expect=(200, 503))
    checks = ", ".join(f"{k} {v}" for k, v in sorted((health.get("checks") or {}).items()))
    log(f"gateway {args.base_url}: {health.get('status')} (version {health.get('version')}; "
        f"{checks}; speaker model {'yes' if health.get('speaker_available') else 'no'})")

    a, b = sign_up(api, "Alex"), sign_up(api, "Sam")
    log(f"signed up {a.label} <{a.email}> and {b.label} <{b.email}>")
    _, rel = api.call("POST", "/v1/relationships", a.token,
                      {"partner_email": b.email, "kind": "romantic"})
    rid = rel["id"]
    for m in (a, b):
        api.call("PUT", f"/v1/relationships/{rid}/consent/{m.user_id}", m.token, {"status": "granted"})
    log(f"relationship {rid}: both members granted consent")
    _, sess = api.call("POST", "/v1/sessions", a.token, {"relationship_id": rid})
    sid = sess["id"]
    log(f"session {sid} started")

    session = Session(sid, [a, b])
    sockets = {}
    readers = []
    try:
        for m in (a, b):
            sockets[m.user_id] = await open_socket(args.base_url, sid, m)
            readers.append(asyncio.create_task(session.read(m, sockets[m.user_id])))
        both = {a.user_id, b.user_id}
        if not await session.wait_for(lambda: session.participants >= both, 10):
            raise Failure("both members' sockets opened, but the session never listed both")

        work = [stream_frames(sockets[a.user_id], sid, args.frames, "fast", args.interval),
                stream_frames(sockets[b.user_id], sid, args.frames, "overlap", args.interval)]
        if audio:
            start, chunks, pace = audio
            log(f"streaming {Path(args.audio).name} from {a.label} as {start['codec']} "
                f"({len(chunks)} chunks)")
            work.append(stream_audio(sockets[a.user_id], session, a, start, chunks, pace))
        log(f"streaming {args.frames} feature frames from each member")
        try:
            await asyncio.gather(*work)
        except ConnectionClosed as e:
            raise Failure(f"a socket closed while streaming: {e}") from None

        # what the frames and audio should bring back: one nudge per member (the rate limit
        # lets one through per member and window) and a speaker event per speech segment
        want_nudges = args.expect_nudges if args.expect_nudges is not None else 2
        want_speakers = 1 if audio else 0

        def nudges() -> int:
            return sum(len(m.nudges) for m in session.members)

        def enough() -> bool:
            return (nudges() >= want_nudges
                    and (session.audio_unavailable or len(session.speaker_events) >= want_speakers))

        await session.wait_for(enough, args.timeout)
        if audio and not session.audio_unavailable:
            # segments come out one after another: give the last ones a moment
            await asyncio.sleep(args.settle)

        _, fin = api.call("POST", f"/v1/sessions/{sid}/finalize", a.token, {})
        log(f"finalized: session is {fin.get('status')}")
        closed = await session.wait_for(lambda: all(r.done() for r in readers), 10)
        codes = ", ".join(f"{m.label} {m.close_code}" for m in session.members)
        log(f"sockets closed ({codes})" if closed else "sockets still open 10 s after finalize")
    finally:
        for ws in sockets.values():
            await ws.close()
        for r in readers:
            r.cancel()

    report = wait_report(api, sid, a.token, args.report_timeout)
    print_summary(session, report)

    problems = []
    if args.expect_nudges is not None and nudges() < args.expect_nudges:
        problems.append(f"expected at least {args.expect_nudges} nudges, got {nudges()}")
    if args.expect_speaker_events and not session.speaker_events:
        why = (" (the gateway has no speaker model: set ECAPA_MODEL_DIR)"
               if session.audio_unavailable else "")
        problems.append("expected speaker events, got none" + why)
    if session.errors:
        problems.append(f"the gateway reported {len(session.errors)} error(s) on the sockets")
    if problems:
        raise Failure("; ".join(problems))
    return 0


def wait_report(api: Api, sid: str, token: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = api.call("GET", f"/v1/sessions/{sid}/report", token, expect=(200, 202))
        if status == 200:
            log("report ready")
            return body
        if time.monotonic() > deadline:
            raise Failure(f"the report of session {sid} was not ready within {timeout:.0f} s")
        time.sleep(0.25)


def print_summary(session: Session, report: dict) -> None:
    counts: dict[str, int] = {}
    for m in session.members:
        for n in m.nudges:
            counts[n.get("nudge_type", "?")] = counts.get(n.get("nudge_type", "?"), 0) + 1
    live = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    print("summary:")
    print(f"  live: {sum(counts.values())} nudges ({live}), "
          f"{len(session.speaker_events)} speaker events")
    rn = report.get("nudges") or {}
    by_type = ", ".join(f"{k} {v}" for k, v in sorted((rn.get("by_type") or {}).items())) or "none"
    print(f"  report: {report.get('frames')} frames, {report.get('duration_s', 0):.1f} s, "
          f"nudges {rn.get('total')} ({by_type})"
          + ("" if report.get("complete", True) else
             f", incomplete: {report.get('incomplete_reason')}"))
    for s in report.get("speakers") or []:
        print(f"  speaker {session.name(s.get('user_id'))}: talk {s.get('talk_time_s', 0):.1f} s "
              f"({100 * (s.get('talk_share') or 0):.0f}%), nudges {s.get('nudges')}")
    for h in report.get("highlights") or []:
        print(f"  highlight: {h}")
    for act in report.get("suggested_activities") or []:
        print(f"  suggested: {act.get('title')} ({act.get('minutes')} min)")
    print(f"example client: {sum(counts.values())} nudges, "
          f"{len(session.speaker_events)} speaker events, report with {report.get('frames')} frames",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="the gateway (REST under /v1, WebSocket alongside)")
    p.add_argument("--audio", default=str(DEFAULT_AUDIO),
                   help="recording to stream from the first member: 16-bit WAV, FLAC, Ogg or MP3")
    p.add_argument("--no-audio", action="store_true", help="stream feature frames only")
    p.add_argument("--frames", type=int, default=20, help="feature frames per member")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between frames")
    p.add_argument("--expect-nudges", type=int, metavar="N",
                   help="fail unless at least N nudges arrive (without it: wait up to --timeout for 2)")
    p.add_argument("--expect-speaker-events", action="store_true",
                   help="fail unless at least one server.speaker event arrives")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for the expected nudges and speaker events")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait for further speaker events after the first")
    p.add_argument("--report-timeout", type=float, default=60.0,
                   help="seconds to wait for the report after finalize")
    args = p.parse_args(argv)
    if args.frames < 2 or args.interval < 0 or args.timeout <= 0:
        p.error("--frames must be at least 2, --interval at least 0, --timeout positive")
    if urllib.parse.urlsplit(args.base_url).scheme not in ("http", "https"):
        p.error("--base-url must start with http:// or https://")
    try:
        return asyncio.run(run(args))
    except Failure as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
