"""Video I/O with PyAV: probe (validate + count frames), decode exactly the sampled frames, encode.

This is the reference decoder: feature extraction, the Triton cpu decode step and the PyTorch
reference pipeline all call :func:`load_frames`, so training and serving see the same pixels.
torch-free: the python backend models import it.

Every rejection is a :class:`VideoError` whose ``code`` says which check failed, so callers (the
probe, ``vidcls extract``, the client) can report it per file.
"""

from __future__ import annotations

import array
import io
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from vidcls.config import InputLimits, VidclsConfig
from vidcls.sampling import sample_indices

Source = Union[bytes, bytearray, memoryview, np.ndarray, str, os.PathLike]

# The scaler both decoders use to go to frame_size x frame_size (no crop, aspect not kept).
RESIZE_INTERPOLATION = "BILINEAR"

# Decoder threads per request. PyAV's default (0 = one per CPU) would give every concurrent
# request on a many-core host dozens of threads and per-thread buffers; a fixed small number keeps
# a request's memory and CPU share bounded. Slice threading (PyAV's default type) decodes
# bit-exactly like one thread, so features do not depend on this number.
DECODER_THREADS = 2
# Wall-clock guards on FFmpeg's own loops (opening/probing the container, each packet read).
# Files come from memory or local disk, so hitting these means a pathological file, not a slow disk.
OPEN_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 30.0
# Seeking (decode_frames): only where a key frame is a true random access point, so that decoding
# from it gives the same pictures as decoding from the start: H.264/HEVC (FFmpeg withholds or flags
# as corrupt any picture that needs references from before the seek point), VP8/VP9/AV1 key
# frames, and intra-only MJPEG. MPEG-1/2/4 part 2 and Theora always decode from the start.
SEEK_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg"})
# Containers with a seek index (MP4/MOV sample tables, Matroska cues); MPEG-TS, AVI, FLV and Ogg
# seek by byte guesses or not at all and always decode from the start.
SEEK_CONTAINERS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm"})
# Seek only when the plan decodes at most this share of the packets a pass from the start would.
# The demux pass and the seeks cost little: measured (benchmarks/bench_decode.py) 1.4x faster at a
# share of 0.54, 1.1x at 0.79, even at 0.93; 0.8 keeps a margin for slower demuxers.
SEEK_MAX_COST = 0.8
# Seeking is not tried when the sampled frames are on average fewer than this many frames apart:
# a GOP is rarely shorter, so there is nothing to skip, and the second container open that the
# demux pass needs costs ~30 ms (18 % of a 300-frame clip's decode, measured).
SEEK_MIN_SPACING = 16
# No protocol at all for anything a demuxer might open by itself (HLS/DASH playlists, concat
# lists, image sequences ...): we read the bytes we were handed and nothing they point to.
# ("none" matches no protocol name; an empty value would mean "no whitelist".)
_NO_PROTOCOLS = "none"


class VideoError(ValueError):
    """A file that cannot be classified; ``code`` names the failed check or limit."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ProbeResult:
    container: str
    codec: str
    width: int
    height: int
    num_frames: int  # counted from the packets, not the header (headers can lie)
    duration_s: float
    size_bytes: int
    # Presentation time (s, from the first frame) of every counted frame in presentation order,
    # from the packets' pts; None when a packet had none. See frame_times().
    frame_pts_s: np.ndarray | None = field(default=None, repr=False, compare=False)
    # From the stream headers (no decoding): the codec profile FFmpeg names ("High 10", "Main 10",
    # "Rext"), the bit depth and the chroma subsampling ("4:2:0", "4:2:2", "4:4:4", "4:0:0"; "rgb"
    # for RGB-coded streams) of the coded pictures; None where the headers do not say.
    profile: str | None = None
    bit_depth: int | None = None
    chroma: str | None = None


class _Nameless:
    """A read-only file without a ``name``.

    PyAV hands a file object's name to FFmpeg as its URL: the demuxer would then be guessed
    partly from the file extension (a ``.txt`` file becomes ANSI art) and playlists would resolve
    references relative to the real path. Without a name, a file on disk and the same bytes sent
    to the server are read identically.
    """

    def __init__(self, path: Path):
        self._file = open(path, "rb")

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_file(source: Source):
    """A file object PyAV can open, plus the byte size; never copies a numpy buffer twice."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        size = path.stat().st_size
        return _Nameless(path), size
    if isinstance(source, np.ndarray):
        source = np.ascontiguousarray(source).reshape(-1).view(np.uint8).data
    return io.BytesIO(source), memoryview(source).nbytes


def _max_pixels(limits: InputLimits) -> int:
    return int(limits.max_width) * int(limits.max_height)


def _open(fileobj, limits: InputLimits | None = None):
    """Open a container from a file object, with no protocols and a bounded decoder frame size.

    ``max_pixels`` reaches the decoders FFmpeg opens to probe stream parameters (where the
    format declares its streams in its header; MPEG-TS declares them later and is bounded by
    ``max_bytes`` alone there), so a header that lies about a huge picture cannot make the probe
    allocate it.
    """
    import av

    limits = limits or InputLimits()
    options = {"protocol_whitelist": _NO_PROTOCOLS, "max_pixels": str(_max_pixels(limits))}
    try:
        return av.open(fileobj, mode="r", metadata_errors="ignore", options=options,
                       timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))
    except av.error.ExitError:  # the interrupt callback: OPEN_TIMEOUT_S passed
        raise VideoError("timeout", f"opening the container took more than {OPEN_TIMEOUT_S:.0f} s") from None
    except av.error.FFmpegError as exc:
        raise VideoError("not_a_video", f"FFmpeg cannot read the container ({exc.__class__.__name__})") from None
    except Exception as exc:  # PyAV raises plain errors on some garbage (e.g. UnicodeDecodeError)
        raise VideoError("not_a_video", f"cannot open the file ({exc.__class__.__name__})") from None


def _bounded_decoder(stream, limits: InputLimits):
    """The stream's decoder with the per-request bounds: DECODER_THREADS threads, and FFmpeg's
    ``max_pixels`` so a picture over the size limit is refused before it is allocated."""
    ctx = stream.codec_context
    ctx.thread_count = DECODER_THREADS
    ctx.options = {**(ctx.options or {}), "max_pixels": str(_max_pixels(limits))}
    return ctx


def _check_resolution(width: int, height: int, limits: InputLimits) -> None:
    if width > limits.max_width or height > limits.max_height:
        raise VideoError("max_resolution", f"{width}x{height} is over the limit of "
                         f"{limits.max_width}x{limits.max_height}")


def codec_name(stream) -> str:
    """The codec of a video stream, as InputLimits.allowed_codecs names it: FFmpeg's decoder name,
    except where that decoder wraps an external library (PyAV's FFmpeg decodes AV1 with
    ``libdav1d``), where it is the codec's own name (``av1``)."""
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx.name.startswith("lib") else ctx.name


def picture_format(stream) -> tuple[int | None, str | None]:
    """(bit depth, chroma subsampling) of the coded pictures, from the pixel format FFmpeg read in
    the stream headers while opening the container; (None, None) when it is unknown."""
    fmt = stream.codec_context.format
    if fmt is None or not fmt.components:
        return None, None
    bits = max(c.bits for c in fmt.components)
    if fmt.name.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr")):
        return bits, "rgb"
    if len(fmt.components) < 3:  # gray, gray10le, ...: luma only (alpha, if any, is not chroma)
        return bits, "4:0:0"
    luma, cb = fmt.components[0], fmt.components[1]  # planar or semi-planar YUV: Y first, then Cb
    if cb.height < luma.height:
        return bits, "4:2:0"
    if cb.width == luma.width:
        return bits, "4:4:4"
    return bits, "4:2:2" if 2 * cb.width >= luma.width else "4:1:1"


def _video_stream(container):
    streams = [s for s in container.streams if s.type == "video"]
    # Attached pictures (cover art in audio files) are video streams with one frame: not video.
    streams = [s for s in streams if not (s.disposition & 0x0400)]  # AV_DISPOSITION_ATTACHED_PIC
    if not streams:
        raise VideoError("no_video_stream", "the file has no video stream (audio-only or not a video)")
    stream = streams[0]
    if stream.codec_context is None:  # FFmpeg has no decoder for it (e.g. an unknown AVI fourcc)
        raise VideoError("codec", "the video stream's codec is unknown to FFmpeg (no decoder for it)")
    return stream


def check_size(size: int, limits: InputLimits) -> None:
    """The checks on the byte count alone (``empty``, ``max_bytes``): the probe makes them before
    opening the bytes, and ``vidcls classify`` before reading a file."""
    if size == 0:
        raise VideoError("empty", "the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise VideoError("max_bytes", f"{size} bytes is over the limit of {limits.max_bytes} bytes")


def _packet_kind(packet) -> str | None:
    """What a demuxed packet is for counting and decoding frames.

    ``"picture"``: data for the decoder. ``"repeat"``: no data but a time stamp: the encoder wrote
    an empty packet for a frame that repeats the previous picture (libtheora does this for
    dropped or unchanged frames, so screen recordings and games are full of them); players show
    the previous picture again, and FFmpeg's command line counts and outputs it as a frame. Such
    a packet must never reach the decoder: FFmpeg takes an empty packet as end-of-stream (a
    flush) and decodes nothing after it. ``None``: PyAV's flush packet after the last one (no
    data, no time stamps), which is not a frame.
    """
    if packet.size:
        return "picture"
    if packet.pts is None and packet.dts is None:
        return None
    return "repeat"


# Containers whose video time stamps count frame slots (AVI: pts = chunk index, time base = one
# frame). A frame dropped by the writer is stored as an empty chunk, which FFmpeg's demuxer skips,
# leaving a gap in the time stamps; like an empty packet, it repeats the picture before it.
SLOT_CONTAINERS = frozenset({"avi"})


def _dropped_before(slots: bool, last_pts: int | None, pts: int | None) -> int:
    """Frames dropped (stored empty) between the packet at ``last_pts`` and this one, in a
    container whose time stamps count frame slots; 0 elsewhere or where a time stamp is missing."""
    if not slots or last_pts is None or pts is None:
        return 0
    return max(0, int(pts) - int(last_pts) - 1)


def probe(source: Source, limits: InputLimits | None = None) -> ProbeResult:
    """Validate ``source`` against ``limits`` and count its frames, without decoding any.

    Frames are counted by demuxing packets, so a container that claims more frames than it holds
    (or none at all) is counted correctly, and the count stops as soon as a limit is passed.
    """
    limits = limits or InputLimits()
    fileobj, size = _as_file(source)
    try:
        check_size(size, limits)
    except VideoError:
        fileobj.close()
        raise
    with fileobj, _open(fileobj, limits) as container:
        fmt_names = set(container.format.name.split(","))
        if not fmt_names & set(limits.allowed_containers):
            raise VideoError("container", f"container {container.format.name!r} is not allowed "
                             f"(allowed: {', '.join(limits.allowed_containers)})")
        stream = _video_stream(container)
        codec = codec_name(stream)
        if codec not in limits.allowed_codecs:
            raise VideoError("codec", f"codec {codec!r} is not allowed (allowed: {', '.join(limits.allowed_codecs)})")
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        _check_resolution(width, height, limits)
        # 0x0 means FFmpeg could not learn the size (no packets, or none it could parse): decided
        # below from the packet count, not reported as a tiny picture.
        if width and height and min(width, height) < limits.min_side:
            raise VideoError("min_resolution", f"{width}x{height}: each side must be at least {limits.min_side} pixels")
        header_duration = _stream_duration(stream, container)
        if header_duration > limits.max_duration_s:
            raise VideoError("max_duration", f"{header_duration:.1f} s is over the limit of {limits.max_duration_s:.0f} s")
        count, last_pts = 0, None
        first_pts = None
        slots = bool(fmt_names & SLOT_CONTAINERS)
        previous = None  # the last packet's pts, in demux order (for dropped frames)
        all_pts = array.array("q")  # 8 bytes a frame: the frame time stamps (evidence)
        time_base = stream.time_base
        # Time stamps past this span (in stream ticks) break max_duration: stop reading there.
        max_ticks = limits.max_duration_s / float(time_base) if time_base else None
        try:
            for packet in container.demux(stream):
                if _packet_kind(packet) is None:  # the flush packet at the end
                    continue
                # A repeated picture (empty packet, or a dropped frame's empty AVI chunk) is a frame
                # too: players show it and FFmpeg counts it.
                dropped = _dropped_before(slots, previous, packet.pts)
                count += 1 + dropped
                if count > limits.max_frames:  # before a claimed gap is spelled out below
                    raise VideoError("max_frames", f"more than {limits.max_frames} frames")
                if dropped:  # a dropped frame's slot is its time stamp
                    all_pts.extend(range(previous + 1, packet.pts))
                previous = packet.pts if packet.pts is not None else previous
                if packet.pts is not None:
                    all_pts.append(packet.pts)
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    last_pts = packet.pts if last_pts is None else max(last_pts, packet.pts)
                    if max_ticks is not None and last_pts - first_pts > max_ticks:
                        span = float((last_pts - first_pts) * time_base)
                        raise VideoError("max_duration", f"{span:.1f} s is over the limit of "
                                         f"{limits.max_duration_s:.0f} s")
                if count > limits.max_frames:
                    raise VideoError("max_frames", f"more than {limits.max_frames} frames")
        except VideoError:
            raise
        except Exception as exc:
            if count == 0:
                raise VideoError("corrupt", f"the video stream cannot be read ({exc.__class__.__name__})") from None
            # A damaged tail: keep the packets read so far.
        if count == 0:
            raise VideoError("no_frames", "the video stream has no frames")
        if not (width and height):
            raise VideoError("corrupt", "the size of the pictures cannot be read from the stream")
        duration = header_duration
        if last_pts is not None and time_base is not None:
            duration = max(duration, float((last_pts - first_pts) * time_base))
        if duration > limits.max_duration_s:
            raise VideoError("max_duration", f"{duration:.1f} s is over the limit of {limits.max_duration_s:.0f} s")
        pts_s = None
        if len(all_pts) == count and time_base is not None:
            ticks = np.sort(np.frombuffer(all_pts, dtype=np.int64))
            pts_s = (ticks - ticks[0]) * float(time_base)
        bit_depth, chroma = picture_format(stream)
        return ProbeResult(container=container.format.name, codec=codec, width=width, height=height,
                           num_frames=count, duration_s=duration, size_bytes=size, frame_pts_s=pts_s,
                           profile=stream.codec_context.profile, bit_depth=bit_depth, chroma=chroma)


def frame_times(info: ProbeResult, indices) -> np.ndarray:
    """Time stamps (s from the first frame) of the frames at ``indices`` (presentation order, as
    :func:`vidcls.sampling.sample_indices` counts them): the frames' own pts, or, where the
    container gave some packets none, the index spread evenly over the duration."""
    idx = np.asarray(indices, dtype=np.int64)
    if info.frame_pts_s is not None and len(info.frame_pts_s):
        return info.frame_pts_s[np.minimum(idx, len(info.frame_pts_s) - 1)].astype(np.float32)
    return (idx * (info.duration_s / max(info.num_frames, 1))).astype(np.float32)


def _stream_duration(stream, container) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return 0.0


def decode_frames(source: Source, indices: np.ndarray, size: int, num_frames: int | None = None,
                  max_missing_fraction: float = 0.1, limits: InputLimits | None = None,
                  seek: bool = True, stats: dict | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (decode order = presentation order) → uint8 [len, size, size, 3] RGB.

    Only the sampled frames are converted and resized; decoding stops after the last one needed.
    With ``seek`` (default), a long file whose key frames are far fewer than its frames is decoded
    GOP by GOP from the key frame before each sampled frame (:func:`_decode_by_seeking`), when that
    decodes at most :data:`SEEK_MAX_COST` of the packets; the pictures are the same as decoding
    from the start, and anything unexpected on the way falls back to it. ``stats``, if given,
    receives ``mode`` ("seek" | "sequential") and ``packets`` (packets sent to the decoder).
    Memory per call is bounded: the output array, the decoder's reference frames of at most
    ``limits.max_width x limits.max_height`` pixels (``max_pixels`` makes FFmpeg refuse bigger
    pictures before allocating them, whatever the header said), :data:`DECODER_THREADS` threads.

    A packet the decoder rejects is skipped (FFmpeg conceals what it can); a read error ends the
    stream there, and the decoder is flushed so the frames it holds still come out. If the stream
    ends early by at most ``max_missing_fraction`` of ``num_frames``, the missing sampled frames
    repeat the last decoded one; beyond that it is an error rather than a guess.

    An empty packet with a time stamp (:func:`_packet_kind`: a repeated frame) is never sent to
    the decoder; it is a frame showing the picture before it, as players and FFmpeg's command line
    show it, and so is a frame an AVI writer dropped (:data:`SLOT_CONTAINERS`). Frame k is then
    FFmpeg's frame k, and the count matches :func:`probe`'s.
    """
    import av

    limits = limits or InputLimits()
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    # The indices can come from outside (a client may call the decode model directly): an index
    # that no frame matches would leave its row of ``out`` as uninitialised memory.
    if indices.size == 0 or int(indices.min()) < 0:
        raise VideoError("bad_indices", "frame indices must be a non-empty list of non-negative integers")
    if indices.size > limits.max_frames:
        raise VideoError("bad_indices", f"{indices.size} frame indices is over the limit of {limits.max_frames}")
    stats = {} if stats is None else stats
    deadline = time.monotonic() + float(limits.max_decode_s)
    if seek and int(indices.max()) + 1 >= SEEK_MIN_SPACING * len(np.unique(indices)):
        out = _decode_by_seeking(source, indices, size, limits, stats, deadline)
        if out is not None:
            stats["mode"] = "seek"
            return out
    stats["mode"] = "sequential"
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    last_needed = int(indices.max())
    wanted: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices.tolist()):
        wanted.setdefault(idx, []).append(pos)
    fileobj, _ = _as_file(source)
    decoded = 0
    last = None  # the last sampled frame converted (fills a short tail)
    shown = None  # the last picture out of the decoder (what a repeat shows)
    # One entry per packet in demux order whose frame has not come out yet: False = a picture the
    # decoder owes, True = a repeat of the picture before it. A decoder that holds pictures back
    # (threads, reordering) still gets each repeat placed after the picture it follows.
    owed: deque[bool] = deque()

    def emit(frame) -> bool:
        """``frame`` is the next frame ordinal; convert it if sampled. True after the last needed."""
        nonlocal decoded, last
        i = decoded
        decoded += 1
        if i in wanted:
            last = _to_rgb(frame, size)
            for pos in wanted[i]:
                out[pos] = last
        return i >= last_needed

    def repeats() -> bool:
        """The repeats owed before the next picture; a repeat before any picture has nothing to show."""
        while owed and owed[0]:
            owed.popleft()
            if shown is not None and emit(shown):
                return True
        return False

    def take(frames) -> bool:
        """Place the decoder's pictures (and the repeats around them); True once the last needed is done."""
        nonlocal shown
        for frame in frames:
            # The header can lie and a stream can change size midway: judge every picture.
            _check_resolution(frame.width, frame.height, limits)
            if repeats():
                return True
            if owed:
                owed.popleft()
            shown = frame
            if emit(frame):
                return True
        return repeats()

    def refused(ctx) -> None:
        """After a decoder error: was it a picture over the limit (max_pixels said no)?"""
        _check_resolution(int(ctx.width or 0), int(ctx.height or 0), limits)

    def drain(ctx) -> bool:
        try:
            return take(stream.decode(None))
        except av.error.FFmpegError:
            refused(ctx)
            return repeats()

    with fileobj, _open(fileobj, limits) as container:
        stream = _video_stream(container)
        ctx = _bounded_decoder(stream, limits)
        slots = bool(set(container.format.name.split(",")) & SLOT_CONTAINERS)
        previous = None
        done = False
        packets = container.demux(stream)
        while not done:
            try:
                packet = next(packets)
            except StopIteration:
                done = drain(ctx)
                break
            except av.error.ExitError:
                raise VideoError("timeout", f"reading a packet took more than {READ_TIMEOUT_S:.0f} s") from None
            except (av.error.FFmpegError, OSError, ValueError):
                # A damaged or truncated container: flush what the decoder holds, judge below.
                done = drain(ctx)
                break
            kind = _packet_kind(packet)
            if kind is None:  # PyAV's flush packet: the decoder is drained after the loop
                continue
            stats["packets"] = stats.get("packets", 0) + 1
            _check_deadline(deadline, limits)
            # A hostile AVI can claim any gap; no more repeats than frames still wanted are queued.
            owed.extend([True] * min(_dropped_before(slots, previous, packet.pts), last_needed + 1))
            previous = packet.pts if packet.pts is not None else previous
            owed.append(kind == "repeat")
            if kind == "repeat":
                done = repeats() if all(owed) else False
                continue
            try:
                done = take(stream.decode(packet))
            except av.error.FFmpegError:
                refused(ctx)
                if owed and owed[-1] is False:
                    owed.pop()  # this packet gives no picture: nothing is owed for it
    if decoded == 0:
        raise VideoError("corrupt", "no frame of the video stream could be decoded")
    if decoded <= last_needed:
        expected = num_frames or (last_needed + 1)
        missing = expected - decoded
        if missing > max(1, max_missing_fraction * expected):
            raise VideoError("corrupt", f"only {decoded} of {expected} frames could be decoded")
        if last is None:  # none of the sampled frames came out before the stream ended
            raise VideoError("corrupt", f"only {decoded} of {expected} frames could be decoded")
        for idx, positions in wanted.items():
            if idx >= decoded:
                out[positions] = last
    return out


def _to_rgb(frame, size: int) -> np.ndarray:
    import av

    try:
        return frame.to_ndarray(format="rgb24", width=size, height=size, interpolation=RESIZE_INTERPOLATION)
    except (ValueError, av.error.FFmpegError):
        # A pixel format the scaler cannot read: this file's problem, not a crash.
        fmt = getattr(frame.format, "name", "unknown")
        raise VideoError("pixel_format", f"pictures in pixel format {fmt!r} cannot be converted to RGB") from None


class _NoSeek(Exception):
    """Seeking does not apply to this file (or went differently than planned): decode from the start."""


def seek_plan(pts: list[int], keyframe: list[bool], ordinals: Iterable[int]) -> tuple[list[tuple[int, list[int]]], int, int]:
    """Plan a seeking decode from the packets' (decode order) ``pts`` and key-frame flags.

    Frame ordinal k (presentation order, what the sampling indices count) is the packet with the
    k-th smallest pts. Returns ``(runs, cost, sequential_cost)``: each run is (decode index of the
    key frame to seek to, the ordinals it yields); ``cost`` is the packets the runs decode,
    ``sequential_cost`` those a pass from the start decodes. A target whose GOP starts at or before
    what the current run decodes anyway joins that run (no seek backwards, no GOP decoded twice);
    an open GOP's leading pictures start from the key frame of the GOP before.
    """
    n = len(pts)
    order = np.argsort(np.asarray(pts), kind="stable")  # ordinal -> decode index
    last_key = np.maximum.accumulate(np.where(np.asarray(keyframe, bool), np.arange(n), 0))
    runs: list[tuple[int, list[int]]] = []
    end = -1  # last decode index the current run reaches
    cost = 0
    targets = sorted(set(ordinals))
    for ordinal in targets:
        d = int(order[ordinal])
        gop = int(last_key[d])
        # A leading picture of an open GOP (shown before its key frame, decoded after it) needs
        # references from the GOP before: start there.
        while gop > 0 and pts[d] < pts[gop]:
            gop = int(last_key[gop - 1])
        if runs and gop <= end + 1:
            runs[-1][1].append(ordinal)
            if d > end:
                cost += d - end
                end = d
        else:
            runs.append((gop, [ordinal]))
            cost += d - gop + 1
            end = d
    sequential = int(order[targets].max()) + 1
    return runs, cost, sequential


def _check_deadline(deadline: float, limits: InputLimits) -> None:
    if time.monotonic() > deadline:
        raise VideoError("max_decode_s", f"decoding took more than {limits.max_decode_s:g} s")


def _decode_by_seeking(source: Source, indices: np.ndarray, size: int, limits: InputLimits,
                       stats: dict, deadline: float) -> np.ndarray | None:
    """The frames at ``indices``, decoded GOP by GOP after seeks; None where that does not apply.

    A demux pass (no decoding) lists every packet's pts and key flag; :func:`seek_plan` decides
    whether seeking pays. Each frame is found by its pts. None (decode from the start instead):
    a container or codec not in SEEK_CONTAINERS / SEEK_CODECS, a packet without pts, duplicate
    pts, discarded or corrupt packets, a plan over SEEK_MAX_COST, a seek that lands after the
    planned key frame, a sampled picture FFmpeg flags as corrupt or never outputs, any error.
    """
    import av

    fileobj, _ = _as_file(source)
    try:
        with fileobj, _open(fileobj, limits) as container:
            if not set(container.format.name.split(",")) & SEEK_CONTAINERS:
                return None
            stream = _video_stream(container)
            if codec_name(stream) not in SEEK_CODECS:
                return None
            pts: list[int] = []
            keyframe: list[bool] = []
            for packet in container.demux(stream):
                kind = _packet_kind(packet)
                if kind is None:
                    continue
                if kind == "repeat" or packet.pts is None or packet.is_discard or packet.is_corrupt:
                    return None
                pts.append(int(packet.pts))
                keyframe.append(bool(packet.is_keyframe))
                _check_deadline(deadline, limits)
                if len(pts) > limits.max_frames:
                    return None
            wanted_ordinals = indices.tolist()
            if not pts or not keyframe[0] or len(set(pts)) != len(pts) or max(wanted_ordinals) >= len(pts):
                return None
            runs, cost, sequential = seek_plan(pts, keyframe, wanted_ordinals)
            stats.update(seek_cost=cost, sequential_cost=sequential)
            if cost > SEEK_MAX_COST * sequential:
                return None
            by_pts = sorted(pts)
            decode_index = {p: i for i, p in enumerate(pts)}
            positions: dict[int, list[int]] = {}
            for pos, ordinal in enumerate(wanted_ordinals):
                positions.setdefault(by_pts[ordinal], []).append(pos)
            out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
            _bounded_decoder(stream, limits)
            sent = 0
            for start, ordinals in runs:
                todo = {by_pts[o] for o in ordinals}
                container.seek(pts[start], stream=stream, backward=True, any_frame=False)
                first = True
                for packet in container.demux(stream):
                    if first and packet.size:
                        # Landed on a key frame at or before the planned one, or the plan is off.
                        if not packet.is_keyframe or decode_index.get(packet.pts, start + 1) > start:
                            raise _NoSeek
                        first = False
                    sent += 1
                    _check_deadline(deadline, limits)  # -> None: the pass from the start reports it
                    for frame in stream.decode(packet if packet.size else None):
                        _check_resolution(frame.width, frame.height, limits)
                        if frame.pts in todo:
                            if frame.is_corrupt:
                                raise _NoSeek
                            rgb = _to_rgb(frame, size)
                            for pos in positions[frame.pts]:
                                out[pos] = rgb
                            todo.discard(frame.pts)
                    if not todo:
                        break
                if todo:
                    raise _NoSeek  # a sampled frame never came out (dropped as not recovered, EOF)
            stats["packets"] = sent
            return out
    except (_NoSeek, av.error.FFmpegError, OSError, ValueError, KeyError):
        # VideoError is a ValueError too: the pass from the start reports the file's problem.
        return None


def load_frames(source: Source, config: VidclsConfig) -> tuple[np.ndarray, ProbeResult]:
    """The reference decoder: probe, sample ``config.num_frames`` indices, decode them, resize."""
    info = probe(source, config.limits)
    indices = sample_indices(info.num_frames, config.num_frames)
    frames = decode_frames(source, indices, config.frame_size, info.num_frames,
                           config.limits.max_missing_fraction, limits=config.limits)
    return frames, info


def encode_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 25.0,
                 codec: str = "libx264", pix_fmt: str = "yuv420p",
                 options: dict[str, str] | None = None) -> Path:
    """Write RGB uint8 frames [H, W, 3] to ``path`` (container from the suffix)."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = dict(options)
        for arr in _chain(first, frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _chain(first, rest):
    yield first
    yield from rest
