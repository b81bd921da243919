"""The video encoder: frames in, frame packets out, with the palette carried from frame to frame."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

import numba
import numpy as np

from kmq.codec import entropy
from kmq.codec.video import StreamHeader, pack_frame
from kmq.errors import InputError
from kmq.quant import fit_palette
from kmq.quant.histogram import Histogram, as_pixel_rows, build_histogram, histogram_of_rows

__all__ = ["VideoEncoder", "EncodedFrame", "EncoderTotals", "DITHERS"]

DITHERS = ("none", "ordered")
#: Keyframes at least this often by default (frames); about ten seconds of ordinary video.
DEFAULT_KEYINT = 250
#: k-means iterations that continue last frame's palette on this frame's colours.
WARM_ITERATIONS = 2
#: When the carried palette fits this much worse than usual, this many more iterations.
CATCH_UP_RATIO = 1.25
CATCH_UP_ITERATIONS = 8
#: Seedings tried by a full refit (first frame, scene cut).
REFIT_RESTARTS = 2
#: Frames with more pixels than this are sampled for k-means (every n-th pixel of every n-th
#: row, n chosen to keep about this many): plenty for 256 entries, a fraction of a large frame.
_SAMPLE_ABOVE = 1 << 17
#: Bits per channel of the sampled histogram's bins: k-means clusters the bins (exact colour sums).
HISTOGRAM_BITS = 5
_BIN_SHIFT = 8 - HISTOGRAM_BITS
#: Bits per channel of the nearest-entry table (cells 8 values wide): small enough to stay in cache.
TABLE_BITS = 5
#: Default extra squared error per pixel (summed over channels) accepted to keep last frame's
#: indices: within a block as a whole, and for a single pixel of a block that is coded.
DEFAULT_BLOCK_TOLERANCE = 32.0
DEFAULT_PIXEL_TOLERANCE = 64.0
#: A palette entry is resent only when some channel moves by more than this.
PALETTE_STEP = 2
#: Scene cut: this share of the colour distribution moved, or distortion grew this much.
CUT_HISTOGRAM_DISTANCE = 0.5
CUT_DISTORTION_RATIO = 2.5
#: ... and distortion (mean squared error per channel) is at least this, so that a cut out of a
#: still, nearly flat picture needs a real change.
CUT_DISTORTION_FLOOR = 4.0
#: Pixels per stripe of a frame's index data: half the default for pictures, so that a frame's
#: stripes, coded in parallel, keep two or four threads busy to the end (1280×720: 7 stripes of
#: 112 rows, not 3 of 240) and a browser's decoders get more than one stripe each.
VIDEO_STRIPE_PIXELS = 1 << 17
#: Threads that share a frame's work, and the ranges of rows each takes in turn on average.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_PIECES_PER_WORKER = 4
#: Motion search: from the best of a few guesses, at most this many steps of one pixel.
MOTION_STEPS = 4
#: Weight of the newest frame in the running distortion average.
_DISTORTION_SMOOTHING = 0.2


@dataclass
class EncodedFrame:
    """What the encoder made of one frame.

    Attributes
    ----------
    packet : bytes
        The frame packet (docs/FORMAT.md), ready for a .kmqv file or a live socket.
    number : int
        Frame number in the stream.
    pts : int
        Presentation time in time-base units.
    keyframe : bool
        Decodable on its own.
    refit : bool
        The palette was fitted afresh (first frame or scene cut) instead of carried over.
    scene_cut : bool
        A scene cut was detected here.
    palette_updates : int
        Palette entries sent (all of them on a keyframe).
    changed_pixels : int
        Pixels whose index differs from the reference frame's at the same place (all on a
        keyframe); the reference is the previous frame unless it was discardable.
    mse : float
        Mean squared error per channel value against the input frame.
    palette : numpy.ndarray
        The frame's palette, n×C uint8.
    indices : numpy.ndarray
        H×W uint8.
    moved_blocks : int
        16×16 blocks predicted from elsewhere in the previous frame (non-zero motion vector).
    discardable : bool
        No later frame is coded against this one (the upper of two temporal layers).
    """

    packet: bytes
    number: int
    pts: int
    keyframe: bool
    refit: bool
    scene_cut: bool
    palette_updates: int
    changed_pixels: int
    mse: float
    palette: np.ndarray
    indices: np.ndarray
    moved_blocks: int = 0
    discardable: bool = False

    @property
    def psnr(self) -> float:
        """PSNR in dB against the input frame (``inf`` when exact)."""
        return _psnr(self.mse)

    @cached_property
    def reconstructed(self) -> np.ndarray:
        """The frame a decoder shows, H×W×C uint8; equal to the decoder's output bit for bit."""
        return np.take(self.palette, self.indices, axis=0)


@dataclass
class EncoderTotals:
    """Running totals over the frames encoded so far."""

    frames: int = 0
    keyframes: int = 0
    discardable: int = 0
    refits: int = 0
    scene_cuts: int = 0
    palette_updates: int = 0
    packet_bytes: int = 0
    squared_error: float = 0.0
    samples: int = 0

    @property
    def mse(self) -> float:
        """Mean squared error per channel value over every frame."""
        return self.squared_error / self.samples if self.samples else 0.0

    @property
    def psnr(self) -> float:
        """PSNR in dB over all frames together."""
        return _psnr(self.mse)

    def add(self, encoded: EncodedFrame, samples: int) -> None:
        """Count one more encoded frame of ``samples`` channel values."""
        self.frames += 1
        self.keyframes += int(encoded.keyframe)
        self.discardable += int(encoded.discardable)
        self.refits += int(encoded.refit)
        self.scene_cuts += int(encoded.scene_cut)
        self.palette_updates += encoded.palette_updates
        self.packet_bytes += len(encoded.packet)
        self.squared_error += encoded.mse * samples
        self.samples += samples


def _psnr(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 * 255.0 / mse)


class VideoEncoder:
    """Encodes frames one at a time into frame packets, keeping the palette as state between frames.

    Each frame continues k-means from the previous frame's palette for a few iterations, so entry j
    keeps its meaning; entries that barely move are not resent. Blocks and pixels whose previous
    index is nearly as good as the best one keep it, so unchanged regions cost almost nothing.
    A scene cut (the colour distribution or the distortion jumps) refits the palette afresh and
    starts a keyframe; keyframes also come at least every ``keyint`` frames, or on request.

    Parameters
    ----------
    width, height : int
        Frame size; every frame must have it.
    k : int
        Palette size, 2..256.
    channels : int
        3 for RGB frames, 4 for RGBA.
    keyint : int
        The longest run of frames between keyframes.
    dither : {"none", "ordered"}
        Ordered (Bayer) dithering is stable from frame to frame; error diffusion is not offered
        because it makes every frame's indices differ.
    frame_rate : fractions.Fraction or float
        Nominal frames per second (for the header, and timestamps when none are given).
    time_base : fractions.Fraction, optional
        Seconds per pts unit (default ``1 / frame_rate``).
    seed : int
        Seed of the palette fits; the same frames and settings give the same bytes.
    block_tolerance, pixel_tolerance : float
        Extra squared error per pixel (summed over channels) accepted to keep the previous index,
        for a whole 16×16 block and for a single pixel. Zero codes every change.
    motion : bool
        Search motion vectors (RGB frames) and code frames with moved blocks in mode 2.
    temporal_layers : {1, 2}
        With 2, every other delta frame is discardable: it is coded against the last reference
        frame and no frame is coded against it, so that a viewer (or player) that falls behind
        may skip it and lose nothing else; reference frames are then coded against the frame
        two back. With 1 (the default) every frame is coded against the one before it. The
        attribute may be changed between frames (a live server turns the second layer on while
        a viewer is behind): the stream stays valid either way.

    Examples
    --------
    >>> import numpy as np
    >>> encoder = VideoEncoder(32, 24, k=8)
    >>> frame = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    >>> first, second = encoder.encode(frame), encoder.encode(frame)
    >>> first.keyframe, second.keyframe, second.changed_pixels
    (True, False, 0)
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        k: int = 64,
        channels: int = 3,
        keyint: int = DEFAULT_KEYINT,
        dither: str = "none",
        frame_rate: Fraction | float = Fraction(30),
        time_base: Fraction | None = None,
        seed: int = 0,
        block_tolerance: float = DEFAULT_BLOCK_TOLERANCE,
        pixel_tolerance: float = DEFAULT_PIXEL_TOLERANCE,
        motion: bool = True,
        temporal_layers: int = 1,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= 256:
            raise InputError(f"k must be a whole number from 2 to 256, got {k!r}")
        if dither not in DITHERS:
            raise InputError(f"video dither must be one of {', '.join(DITHERS)}; got {dither!r}")
        if isinstance(keyint, bool) or not isinstance(keyint, int) or keyint < 1:
            raise InputError(f"keyint must be a positive whole number, got {keyint!r}")
        if not (block_tolerance >= 0 and pixel_tolerance >= 0):
            raise InputError("tolerances must be zero or positive")
        rate = Fraction(frame_rate).limit_denominator(1 << 16) if frame_rate else Fraction(30)
        if rate <= 0:
            raise InputError(f"frame rate must be positive, got {frame_rate}")
        self.header = StreamHeader(
            width=width,
            height=height,
            channels=channels,
            k=k,
            time_base=Fraction(time_base) if time_base is not None else 1 / rate,
            frame_rate=rate,
        )
        self.k = k
        self.keyint = keyint
        self.dither = dither
        self.seed = seed
        self.block_tolerance = float(block_tolerance)
        self.pixel_tolerance = float(pixel_tolerance)
        self.motion = bool(motion)
        self.temporal_layers = temporal_layers  # checked by the property
        self.totals = EncoderTotals()
        self._pts_step = 1 / (rate * self.header.time_base)
        self._nearest = np.full(1 << (TABLE_BITS * channels), -1, np.int16)
        self._nearest_palette: np.ndarray | None = None  # the palette self._nearest is for
        self._map_bands = _band_mapper(channels)
        self._keyframe_requested = True
        self._palette: np.ndarray | None = None  # float centroids, carried between frames
        self._sent: np.ndarray | None = None  # the uint8 palette the decoder holds
        # This frame's indices are written straight into a new padded map (the coder's layout),
        # which is then the next frame's reference: no per-frame checks, scans or copies. The
        # palette, the map and ``_reference_number`` are the last reference frame's: a
        # discardable frame leaves them as they were.
        self._padded: np.ndarray | None = None
        self._indices: np.ndarray | None = None  # the map inside self._padded
        self._coder_buffers: list[np.ndarray] = []
        self._bin_tables: np.ndarray | None = None
        self._since_keyframe = 0
        self._reference_number = -1
        self._last_pts: int | None = None
        self._coarse: np.ndarray | None = None
        self._distortion: float | None = None
        self._offsets = np.zeros((8, 8), np.int16)
        self._stripe_rows = entropy.default_stripe_rows(width, height, VIDEO_STRIPE_PIXELS)
        self._band_tops = entropy.block_row_tops(height, self._stripe_rows)
        self._vector_shape = entropy.motion_vector_shape(height, width, self._stripe_rows)
        # The last vectors found at each distance in frames from the reference: a block's guess
        # for this frame is its own vector of the last frame coded at the same distance.
        self._vectors: dict[int, np.ndarray] = {}
        self._predicted = entropy.padded_map(height, width)  # the moved reference of this frame

    @property
    def temporal_layers(self) -> int:
        """1, or 2: every other delta frame discardable (may be changed between frames)."""
        return self._temporal_layers

    @temporal_layers.setter
    def temporal_layers(self, layers: int) -> None:
        if layers not in (1, 2) or isinstance(layers, bool):
            raise InputError(f"temporal layers must be 1 or 2, got {layers!r}")
        self._temporal_layers = layers

    @classmethod
    def for_source(cls, info: Any, **settings: Any) -> VideoEncoder:
        """An encoder for the frames of a video input (size, channels and timing from its ``info``).

        Parameters
        ----------
        info : kmq.media.video_source.SourceInfo
            What the input's :class:`~kmq.media.video_source.VideoSource` knows.
        **settings
            Any other parameter of :class:`VideoEncoder` (k, keyint, dither, seed, ...).
        """
        return cls(
            info.width,
            info.height,
            channels=info.channels,
            frame_rate=info.frame_rate or Fraction(30),
            time_base=info.time_base,
            **settings,
        )

    # -- what a viewer needs

    @property
    def header_bytes(self) -> bytes:
        """The stream header record, sent before the first packet (and to each new viewer)."""
        return self.header.to_bytes()

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (a viewer joined, or a seek point is wanted)."""
        self._keyframe_requested = True

    # -- encoding

    def encode(self, frame: np.ndarray, pts: int | None = None, *, keyframe: bool = False) -> EncodedFrame:
        """Encode one frame.

        Parameters
        ----------
        frame : numpy.ndarray
            H×W×C uint8 with the encoder's size and channels.
        pts : int, optional
            Presentation time in time-base units; must increase. By default the previous one
            plus one frame at the nominal rate.
        keyframe : bool
            Force a keyframe.

        Returns
        -------
        EncodedFrame
        """
        header = self.header
        frame = np.asarray(frame)
        if frame.shape != (header.height, header.width, header.channels):
            raise InputError(
                f"frame must be {header.height}×{header.width}×{header.channels} uint8, got shape {frame.shape}"
            )
        rows = as_pixel_rows(frame)
        frame = rows.reshape(frame.shape)
        pts = self._next_pts(pts)
        number = self.totals.frames

        histogram = self._histogram(frame, rows)
        coarse = _coarse_distribution(histogram)
        keyframe = keyframe or self._keyframe_requested or self._since_keyframe >= self.keyint - 1
        keyframe = keyframe or self._sent is None
        refit = self._palette is None
        scene_cut = False
        if not refit:
            fit = self._continue_palette(histogram)
            scene_cut = bool(self._is_scene_cut(coarse, fit.distortion))
            refit = scene_cut
        if refit:
            fit = fit_palette(histogram, self.k, seed=self.seed, restarts=REFIT_RESTARTS)
            keyframe = True

        distance = number - self._reference_number
        discardable = not keyframe and self.temporal_layers == 2 and distance == 1
        palette, changed = self._palette_to_send(fit.palette, keyframe)
        if refit and self.dither == "ordered":
            self._offsets = _bayer_offsets(palette)
        padded = entropy.padded_map(header.height, header.width)
        indices = entropy.map_view(padded)
        self._refresh_nearest(palette)
        vectors = None
        if not keyframe and self.motion and header.channels == 3:
            vectors = np.empty(self._vector_shape, np.int8)
            squared_error, changed_pixels = self._map(
                frame, palette, indices, keyframe, vectors=vectors, guesses=self._vectors.get(distance)
            )
            self._vectors[distance] = vectors
            if not vectors.any():
                vectors = None  # the moved reference is the previous map: coded without vectors
        else:
            squared_error, changed_pixels = self._map(frame, palette, indices, keyframe)
        index_data = entropy.encode_padded_map(
            padded,
            len(palette),
            None if keyframe else self._padded,
            stripe_rows=self._stripe_rows,
            buffers=self._coder_buffers,
            vectors=vectors,
            predicted=self._predicted if vectors is not None else None,
        )
        packet = pack_frame(
            number,
            pts,
            keyframe=keyframe,
            palette=palette,
            changed=changed,
            index_data=index_data,
            discardable=discardable,
            skipped=0 if keyframe else distance - 1,
        )

        samples = header.pixels * header.channels
        if not discardable:
            self._palette = fit.palette
            self._sent = palette
            self._padded = padded
            self._indices = indices
            self._reference_number = number
        self._coarse = coarse
        self._distortion = (
            fit.distortion
            if refit or self._distortion is None
            else (1 - _DISTORTION_SMOOTHING) * self._distortion + _DISTORTION_SMOOTHING * fit.distortion
        )
        self._since_keyframe = 0 if keyframe else self._since_keyframe + 1
        self._keyframe_requested = False
        encoded = EncodedFrame(
            packet=packet,
            number=number,
            pts=pts,
            keyframe=keyframe,
            refit=refit,
            scene_cut=scene_cut,
            palette_updates=len(palette) if keyframe else int(changed.sum()) if changed is not None else 0,
            moved_blocks=0 if vectors is None else int(vectors.any(axis=2).sum()),
            discardable=discardable,
            changed_pixels=header.pixels if keyframe else changed_pixels,
            mse=squared_error / samples,
            palette=palette,
            indices=indices,
        )
        self.totals.add(encoded, samples)
        return encoded

    def _next_pts(self, pts: int | None) -> int:
        if pts is None:
            pts = 0 if self._last_pts is None else round((self.totals.frames) * self._pts_step)
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
        else:
            pts = int(pts)
            if self._last_pts is not None and pts <= self._last_pts:
                raise InputError(f"frame timestamps must increase: {pts} after {self._last_pts}")
        if not -(1 << 63) <= pts < (1 << 63):
            raise InputError(f"timestamp {pts} does not fit in 64 bits")
        self._last_pts = pts
        return pts

    def _histogram(self, frame: np.ndarray, rows: np.ndarray) -> Histogram:
        """This frame's colours for k-means: every pixel of a small frame, a regular sample of a large one."""
        pixels = frame.shape[0] * frame.shape[1]
        if pixels <= _SAMPLE_ABOVE:
            return build_histogram(frame)
        step = max(2, round(math.sqrt(pixels / _SAMPLE_ABOVE)))
        if frame.shape[2] == 3:
            if self._bin_tables is None:
                self._bin_tables = _bin_tables()
            return _sampled_histogram(frame, step, self._bin_tables)
        sample = np.ascontiguousarray(frame[::step, ::step])
        return histogram_of_rows(sample.reshape(-1, frame.shape[2]), 5, sample.shape)

    def _continue_palette(self, histogram: Histogram):
        """A few k-means iterations from last frame's palette; entry j stays entry j."""
        previous = self._palette
        size = len(previous)
        if size < 2:
            return _PaletteState(previous, _distortion_of(histogram, previous))
        fit = fit_palette(histogram, size, init=previous, max_iter=WARM_ITERATIONS, seed=self.seed)
        if self._distortion and fit.distortion > CATCH_UP_RATIO * self._distortion:
            # New colours came in: a few more iterations let entries reach them before the
            # scene-cut test judges the palette.
            fit = fit_palette(histogram, size, init=fit.palette, max_iter=CATCH_UP_ITERATIONS, seed=self.seed)
        return fit

    def _is_scene_cut(self, coarse: np.ndarray, distortion: float) -> bool:
        """A large share of the colour distribution moved, or the palette suddenly fits much worse."""
        moved = 0.5 * float(np.abs(coarse - self._coarse).sum()) if self._coarse is not None else 0.0
        if moved >= CUT_HISTOGRAM_DISTANCE:
            return True
        typical = self._distortion or 0.0
        return distortion >= CUT_DISTORTION_FLOOR and distortion > CUT_DISTORTION_RATIO * typical

    def _palette_to_send(self, centroids: np.ndarray, keyframe: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The uint8 palette the decoder will hold, and which entries changed (None on a keyframe)."""
        rounded = np.clip(np.rint(centroids), 0, 255).astype(np.uint8)
        if keyframe or self._sent is None or len(self._sent) != len(rounded):
            return rounded, None
        moved = np.abs(rounded.astype(np.int16) - self._sent).max(axis=1) > PALETTE_STEP
        palette = self._sent.copy()
        palette[moved] = rounded[moved]
        return palette, moved

    def _refresh_nearest(self, palette: np.ndarray) -> None:
        """Bring the nearest-entry table up to this frame's palette (entries that moved, or all)."""
        sent = self._nearest_palette
        if sent is None or sent.shape != palette.shape:
            self._nearest[:] = -1
        elif not np.array_equal(sent, palette):
            changed = (sent != palette).any(axis=1)
            if changed.sum() * 4 > len(palette):
                self._nearest[:] = -1
            else:
                _update_nearest(self._nearest, palette.astype(np.int32), changed, TABLE_BITS)
        self._nearest_palette = palette

    def _map(
        self,
        frame: np.ndarray,
        palette: np.ndarray,
        indices: np.ndarray,
        keyframe: bool,
        *,
        vectors: np.ndarray | None = None,
        guesses: np.ndarray | None = None,
    ) -> tuple[float, int]:
        """Write this frame's ``indices``, keeping the last reference frame's where they are nearly as good.

        On a keyframe there is nothing to keep. Given ``vectors`` (an array to fill), each block's
        motion vector is searched as well, and the moved reference goes to ``self._predicted``;
        ``guesses`` are then the vectors of the last frame coded at the same distance from its
        reference (none yet: zero vectors). Returns the squared error and the number of pixels
        whose index differs from the reference frame's at the same place.
        """
        palette_int = palette.astype(np.int32)
        dithered = self.dither == "ordered"
        targets = _dithered(frame, self._offsets) if dithered else frame
        bands = len(self._band_tops) - 1
        squared_error = np.zeros(bands)
        changed_pixels = np.zeros(bands, np.int64)
        if vectors is not None:
            if guesses is None:
                guesses = np.zeros(self._vector_shape, np.int8)

            def map_bands(worker: int, first: int, last: int) -> None:
                _map_moved_bands(
                    targets, self._nearest, palette_int, self._padded, guesses, vectors, self._predicted,
                    self._band_tops, self._stripe_rows, self.block_tolerance, self.pixel_tolerance, MOTION_STEPS,
                    first, last, indices, squared_error, changed_pixels,
                )

        else:
            has_previous = not keyframe
            reference = self._indices if has_previous else indices

            def map_bands(worker: int, first: int, last: int) -> None:
                self._map_bands(
                    targets, self._nearest, palette_int, reference, has_previous, self._band_tops,
                    self.block_tolerance, self.pixel_tolerance, first, last, indices, squared_error, changed_pixels,
                )

        _in_parallel(map_bands, bands)
        if dithered:
            squared_error = _squared_error(frame, palette_int, indices)
        return float(squared_error.sum()), int(changed_pixels.sum())


@functools.cache
def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="kmq-video")


def _in_parallel(work: Callable[[int, int, int], None], count: int) -> None:
    """Run ``work(worker, first, last)`` over the ranges of a split of 0..count-1, on all worker threads.

    The kernels release the GIL, so ranges run at once. Plain threads (rather than numba's
    parallel loops) wait without spinning, and each takes the next range as soon as it is free,
    so a thread that the machine's other work holds back delays nothing: the others take its
    share. ``worker`` numbers the thread (0 is the caller), for per-thread accumulators.
    """
    workers = min(_WORKERS, count)
    if workers <= 1:
        work(0, 0, count)
        return
    pieces = min(count, _PIECES_PER_WORKER * workers)
    bounds = [count * piece // pieces for piece in range(pieces + 1)]
    claims = iter(range(pieces))  # next() on it is atomic under the GIL

    def run(worker: int) -> None:
        for piece in claims:
            work(worker, bounds[piece], bounds[piece + 1])

    futures = [_thread_pool().submit(run, worker) for worker in range(1, workers)]
    run(0)
    for future in futures:
        future.result()


@dataclass(frozen=True)
class _PaletteState:
    """A palette kept as it is (too few entries to iterate), in the shape of a PaletteFit."""

    palette: np.ndarray
    distortion: float


def _distortion_of(histogram: Histogram, palette: np.ndarray) -> float:
    distances = ((histogram.colors[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
    nearest = distances.min(axis=1)
    return float(histogram.counts @ nearest) / (histogram.counts.sum() * histogram.channels)


def _coarse_distribution(histogram: Histogram) -> np.ndarray:
    """Share of pixels in each of 512 coarse colour cells (3 bits per RGB channel)."""
    cells = np.clip(histogram.colors[:, :3], 0, 255).astype(np.int64) >> 5
    keys = (cells[:, 0] << 6) | (cells[:, 1] << 3) | cells[:, 2]
    shares = np.bincount(keys, weights=histogram.counts, minlength=512)
    return shares / shares.sum()


def _bayer_offsets(palette: np.ndarray) -> np.ndarray:
    """The 8×8 ordered-dither pattern scaled to the palette's typical spacing, as integers."""
    levels = np.array([[0, 2], [3, 1]])
    matrix = levels
    while matrix.shape[0] < 8:
        # Each step puts a scaled copy of the pattern in each cell of the 2×2 pattern.
        matrix = np.kron(np.ones((2, 2), int), 4 * matrix) + np.kron(levels, np.ones_like(matrix))
    colours = palette[:, :3].astype(np.float64)
    gaps = np.sqrt(((colours[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(gaps, np.inf)
    spread = float(np.median(gaps.min(axis=1))) if len(colours) > 1 else 0.0
    return np.rint(((matrix + 0.5) / 64.0 - 0.5) * spread).astype(np.int16)


# ---------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True)
def _bin_sample(frame, step, first, last, totals):
    """Add sampled rows ``first..last-1`` (every step-th row and pixel) into RGB bins of HISTOGRAM_BITS per channel.

    ``totals[key]`` holds the pixel count, the three colour sums and the sum of squared norms.
    """
    width = frame.shape[1]
    for sampled_row in range(first, last):
        y = sampled_row * step
        for x in range(0, width, step):
            red = np.int64(frame[y, x, 0])
            green = np.int64(frame[y, x, 1])
            blue = np.int64(frame[y, x, 2])
            key = (red >> _BIN_SHIFT) << (2 * HISTOGRAM_BITS)
            key |= ((green >> _BIN_SHIFT) << HISTOGRAM_BITS) | (blue >> _BIN_SHIFT)
            totals[key, 0] += 1
            totals[key, 1] += red
            totals[key, 2] += green
            totals[key, 3] += blue
            totals[key, 4] += red * red + green * green + blue * blue


@numba.njit(cache=True, nogil=True)
def _used_bins(tables):
    """The non-empty bins of the threads' tables added up, in key order: counts, colour sums, squared norms, purity.

    The tables are left all zero, ready for the next frame.
    """
    totals = tables[0]
    used = 0
    for key in range(totals.shape[0]):
        for worker in range(1, tables.shape[0]):
            if tables[worker, key, 0]:
                for field in range(5):
                    totals[key, field] += tables[worker, key, field]
                    tables[worker, key, field] = 0
        if totals[key, 0]:
            used += 1
    counts = np.empty(used)
    sums = np.empty((used, 3))
    squared = np.empty(used)
    pure = np.empty(used, np.bool_)
    i = 0
    for key in range(totals.shape[0]):
        count = totals[key, 0]
        if count == 0:
            continue
        counts[i] = count
        square_of_sum = 0
        for c in range(3):
            sums[i, c] = totals[key, 1 + c]
            square_of_sum += totals[key, 1 + c] * totals[key, 1 + c]
        squared[i] = totals[key, 4]
        # n·Σ|x|² = |Σx|² exactly when every colour in the bin is the same (Cauchy–Schwarz).
        pure[i] = count * totals[key, 4] == square_of_sum
        for field in range(5):
            totals[key, field] = 0
        i += 1
    return counts, sums, squared, pure


def _bin_tables() -> np.ndarray:
    """Zeroed per-thread tables for :func:`_sampled_histogram`, kept by an encoder from frame to frame."""
    return np.zeros((_WORKERS, 1 << (3 * HISTOGRAM_BITS), 5), np.int64)


def _sampled_histogram(frame: np.ndarray, step: int, tables: np.ndarray) -> Histogram:
    """A :class:`Histogram` (HISTOGRAM_BITS bins, exact sums) of every ``step``-th pixel of every ``step``-th row.

    Each thread totals its own rows into its own table of ``tables`` (from :func:`_bin_tables`,
    all zero, and left so); the tables are added in key order, so the result does not depend on
    the number of threads.
    """
    rows = -(-frame.shape[0] // step)
    columns = -(-frame.shape[1] // step)
    try:
        _in_parallel(lambda worker, first, last: _bin_sample(frame, step, first, last, tables[worker]), rows)
        counts, sums, squared, pure = _used_bins(tables)
    except BaseException:
        tables[...] = 0
        raise
    return Histogram(
        colors=sums / counts[:, None],
        counts=counts,
        color_sums=sums,
        squared_norm_sums=squared,
        pure=pure,
        bin_of_pixel=np.empty(0, np.int32),
        bits=HISTOGRAM_BITS,
        shape=(rows, columns, 3),
    )


@numba.njit(cache=True, nogil=True)
def _cell_nearest(key, palette, bits, entries):
    """The entry among the first ``entries`` nearest to the centre of a table cell, and its distance.

    Distances use twice the coordinates, so the cell centre is an integer.
    """
    channels = palette.shape[1]
    width = 1 << (8 - bits)
    best = 0
    best_distance = np.int64(1) << 62
    for j in range(entries):
        distance = _cell_distance(key, palette, j, bits, channels, width)
        if distance < best_distance:
            best_distance = distance
            best = j
    return best, best_distance


@numba.njit(cache=True, nogil=True, inline="always")
def _cell_distance(key, palette, j, bits, channels, width):
    distance = np.int64(0)
    for c in range(channels):
        cell = (key >> (bits * (channels - 1 - c))) & ((1 << bits) - 1)
        difference = 2 * (cell * width) + width - 1 - 2 * np.int64(palette[j, c])
        distance += difference * difference
    return distance


@numba.njit(cache=True, nogil=True)
def _update_nearest(nearest, palette, changed, bits):
    """Bring every filled table cell up to date after the entries flagged in ``changed`` moved.

    A cell served by a moved entry searches again; any other cell only asks whether a moved
    entry is now nearer than its own, so a small palette update costs little.
    """
    channels = palette.shape[1]
    entries = palette.shape[0]
    width = 1 << (8 - bits)
    moved = np.flatnonzero(changed)
    for key in range(nearest.shape[0]):
        current = nearest[key]
        if current < 0:
            continue
        if changed[current]:
            best, _ = _cell_nearest(key, palette, bits, entries)
            nearest[key] = best
            continue
        best = current
        best_distance = _cell_distance(key, palette, current, bits, channels, width)
        for j in moved:
            distance = _cell_distance(key, palette, j, bits, channels, width)
            if distance < best_distance or (distance == best_distance and j < best):
                best_distance = distance
                best = j
        nearest[key] = best


_SHIFT = 8 - TABLE_BITS
_BLOCK_BITS = entropy.BLOCK_SIZE.bit_length() - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _measure_rows(targets, nearest, palette, top, bottom, candidates, candidate_error, with_alpha):
    """Each pixel of rows ``top..bottom-1``: its candidate index and that candidate's squared error.

    A pixel's candidate is the table entry of its target colour's cell; a cell seen for the first
    time is filled here (threads that race on a cell write the same value). Row i of the scratch
    arrays is row ``top + i``.
    """
    width = targets.shape[1]
    entries = palette.shape[0]
    for y in range(top, bottom):
        # Unsigned positions spare numba's negative-index handling in the pixel loops.
        pixels = targets[np.uint64(y)]
        row_candidates = candidates[np.uint64(y - top)]
        row_error = candidate_error[np.uint64(y - top)]
        for x in range(width):
            at = np.uint64(x)
            red = np.int32(pixels[at, 0])
            green = np.int32(pixels[at, 1])
            blue = np.int32(pixels[at, 2])
            key = ((red >> _SHIFT) << (2 * TABLE_BITS)) | ((green >> _SHIFT) << TABLE_BITS) | (blue >> _SHIFT)
            alpha = np.int32(0)
            if with_alpha:
                alpha = np.int32(pixels[at, 3])
                key = (key << TABLE_BITS) | (alpha >> _SHIFT)
            candidate = nearest[np.uint64(key)]
            if candidate < 0:
                candidate, _ = _cell_nearest(key, palette, TABLE_BITS, entries)
                nearest[key] = candidate
            row_candidates[at] = candidate
            row_error[at] = _distance(red, green, blue, alpha, palette, np.uint64(candidate), with_alpha)


@numba.njit(cache=True, nogil=True, inline="always")
def _measure_kept(targets, palette, previous, top, bottom, candidate_error, previous_error, extra_total, with_alpha):
    """The squared error of ``previous``'s index at each pixel of rows ``top..bottom-1``.

    ``extra_total`` (zeroed by the caller) gathers, per block column, what keeping the previous
    indices costs over the candidates.
    """
    width = targets.shape[1]
    for y in range(top, bottom):
        pixels = targets[np.uint64(y)]
        above = previous[np.uint64(y)]
        row_error = candidate_error[np.uint64(y - top)]
        row_kept = previous_error[np.uint64(y - top)]
        for x in range(width):
            at = np.uint64(x)
            alpha = np.int32(pixels[at, 3]) if with_alpha else np.int32(0)
            kept = _distance(
                np.int32(pixels[at, 0]), np.int32(pixels[at, 1]), np.int32(pixels[at, 2]), alpha, palette,
                np.uint64(above[at]), with_alpha,
            )
            extra_total[np.uint64(x >> _BLOCK_BITS)] += kept - row_error[at]
            row_kept[at] = kept


@numba.njit(cache=True, nogil=True, inline="always")
def _choose_rows(
    previous, has_previous, base, top, bottom, candidates, candidate_error, previous_error, extra_total, keep_block,
    block_tolerance, pixel_tolerance, out,
):
    """Second pass: each pixel of rows ``top..bottom-1`` takes its previous index or its candidate.

    A block whose previous indices cost at most ``block_tolerance`` more per pixel than the
    candidates keeps them all (the coder then sends one flag); in the other blocks a pixel keeps
    its previous index when that costs at most ``pixel_tolerance`` more. Returns the rows' squared
    error and how many pixels differ from ``base`` (the same place in the last reference frame).
    """
    width = out.shape[1]
    columns = (width + entropy.BLOCK_SIZE - 1) >> _BLOCK_BITS
    if has_previous:
        rows = bottom - top
        for column in range(columns):
            left = column << _BLOCK_BITS
            pixels = (min(width, left + entropy.BLOCK_SIZE) - left) * rows
            keep_block[column] = np.int32(extra_total[column] <= block_tolerance * pixels)
    tolerance = np.int32(pixel_tolerance)
    band_error = 0
    band_changed = 0
    for y in range(top, bottom):
        above = previous[np.uint64(y)]
        before = base[np.uint64(y)]
        written = out[np.uint64(y)]
        row_candidates = candidates[np.uint64(y - top)]
        row_error = candidate_error[np.uint64(y - top)]
        row_kept = previous_error[np.uint64(y - top)]
        if not has_previous:
            for x in range(width):
                at = np.uint64(x)
                written[at] = row_candidates[at]
                band_error += row_error[at]
            continue
        for column in range(columns):
            left = column << _BLOCK_BITS
            right = min(width, left + entropy.BLOCK_SIZE)
            if keep_block[column]:
                # The whole block keeps its previous indices.
                for x in range(left, right):
                    at = np.uint64(x)
                    entry = above[at]
                    written[at] = entry
                    band_error += row_kept[at]
                    band_changed += np.int32(entry != before[at])
                continue
            # Without branches: each pixel takes its previous index or its candidate, chosen by a
            # mask (all ones to keep the previous index, else zero).
            for x in range(left, right):
                at = np.uint64(x)
                candidate = np.int32(row_candidates[at])
                error = row_error[at]
                entry = np.int32(above[at])
                kept = row_kept[at]
                mask = -np.int32(kept <= error + tolerance)
                chosen = (entry & mask) | (candidate & ~mask)
                written[at] = chosen
                band_error += (kept & mask) | (error & ~mask)
                band_changed += np.int32(chosen != np.int32(before[at]))
    return band_error, band_changed


@functools.cache
def _band_mapper(channels: int) -> Callable:
    """The kernel that chooses indices against the previous frame in place, compiled for ``channels`` channels.

    The channel count, the table's bits and the block size are constants of each compiled copy,
    which keeps the per-pixel work to a few shifts, one table look-up and one or two distances.
    """
    with_alpha = channels == 4
    block = entropy.BLOCK_SIZE

    @numba.njit(cache=True, nogil=True)
    def map_bands(
        targets, nearest, palette, previous, has_previous, tops, block_tolerance, pixel_tolerance,
        first, last, out, squared_error, changed,
    ):
        """Choose the indices of bands ``first..last-1``; fill their squared error and changed pixels.

        Band i covers rows ``tops[i]..tops[i+1]-1`` (at most one block high): a row of the coder's
        16×16 blocks. Without a previous frame each pixel takes its candidate; with one, see
        :func:`_choose_rows`. Rows are scanned whole, so the inner loops are long, and the blocks
        are decided from per-block totals. Bands are independent, so threads may run disjoint
        ranges at once. Errors are against the targets.
        """
        width = targets.shape[1]
        columns = (width + block - 1) >> _BLOCK_BITS
        candidates = np.empty((block, width), np.uint8)
        candidate_error = np.empty((block, width), np.int32)
        previous_error = np.empty((block, width), np.int32)
        extra_total = np.empty(columns, np.int64)
        keep_block = np.zeros(columns, np.int32)
        for band in range(first, last):
            top = tops[band]
            bottom = tops[band + 1]
            _measure_rows(targets, nearest, palette, top, bottom, candidates, candidate_error, with_alpha)
            if has_previous:
                extra_total[:] = 0
                _measure_kept(
                    targets, palette, previous, top, bottom, candidate_error, previous_error, extra_total, with_alpha
                )
            squared_error[band], changed[band] = _choose_rows(
                previous, has_previous, previous, top, bottom, candidates, candidate_error, previous_error,
                extra_total, keep_block, block_tolerance, pixel_tolerance, out,
            )

    return map_bands


@numba.njit(cache=True, nogil=True)
def _map_moved_bands(
    targets, nearest, palette, previous, guesses, vectors, reference, tops, stripe_rows, block_tolerance,
    pixel_tolerance, steps, first, last, out, squared_error, changed,
):
    """Choose the motion vectors and indices of bands ``first..last-1`` (RGB frames).

    ``previous`` is the last reference frame's padded map and ``reference`` the padded map that
    receives it moved by the vectors. A band's candidates are found first (:func:`_measure_rows`);
    each block's search (:func:`_search_block`) then samples them instead of looking them up
    again. Once the band's vectors are known and its rows of ``reference`` written, every pixel
    is measured against the moved reference, once, and the indices are chosen as
    :func:`_choose_rows` does; ``changed`` counts the pixels that differ from ``previous`` in
    place. Bands are independent, so threads may run disjoint ranges at once.
    """
    height, width = targets.shape[0], targets.shape[1]
    block = entropy.BLOCK_SIZE
    blocks = vectors.shape[1]
    in_place = previous[:-1, 2:-1]  # the maps inside the padded ones, as entropy.map_view gives them
    moved = reference[:-1, 2:-1]
    candidates = np.empty((block, width), np.uint8)
    candidate_error = np.empty((block, width), np.int32)
    previous_error = np.empty((block, width), np.int32)
    extra_total = np.empty(blocks, np.int64)
    keep_block = np.zeros(blocks, np.int32)
    samples = np.empty((block * block // 4, 6), np.int32)  # y, x, RGB, candidate's error
    tolerance = np.int32(pixel_tolerance)
    for band in range(first, last):
        y0 = tops[band]
        y1 = tops[band + 1]
        top = y0 - y0 % stripe_rows
        bottom = min(top + stripe_rows, height)
        _measure_rows(targets, nearest, palette, y0, y1, candidates, candidate_error, False)
        for b in range(blocks):
            x0 = b * block
            x1 = min(x0 + block, width)
            # The block's samples (every other pixel, in a quincunx) with their candidates' errors,
            # and what keeping the previous indices in place costs them.
            count = 0
            for y in range(y0, y1, 2):
                pixels = targets[np.uint64(y)]
                errors = candidate_error[np.uint64(y - y0)]
                for x in range(x0 + ((y - y0) & 2) // 2, x1, 2):
                    at = np.uint64(x)
                    sample = samples[np.uint64(count)]
                    sample[0] = y
                    sample[1] = x
                    sample[2] = pixels[at, 0]
                    sample[3] = pixels[at, 1]
                    sample[4] = pixels[at, 2]
                    sample[5] = errors[at]
                    count += 1
            best = _motion_cost(samples, count, previous, palette, 0, 0, top, bottom, tolerance, 1 << 62)
            enough = block_tolerance * count
            best_x = 0
            best_y = 0
            if best > enough:
                best_x, best_y = _search_block(
                    samples, count, previous, palette, guesses, vectors, band, b, top, bottom, tolerance, enough,
                    steps, best,
                )
            vectors[band, b, 0] = best_x
            vectors[band, b, 1] = best_y
        entropy.predict_rows(previous, vectors, band, reference, y0, y1, top, bottom)
        extra_total[:] = 0
        _measure_kept(targets, palette, moved, y0, y1, candidate_error, previous_error, extra_total, False)
        squared_error[band], changed[band] = _choose_rows(
            moved, True, in_place, y0, y1, candidates, candidate_error, previous_error, extra_total, keep_block,
            block_tolerance, pixel_tolerance, out,
        )


@numba.njit(cache=True, nogil=True)
def _motion_cost(samples, count, previous, palette, dx, dy, top, bottom, tolerance, limit):
    """What keeping the previous indices moved by (dx, dy) costs a block, from its sampled pixels.

    A sample whose moved previous index costs at most ``tolerance`` more squared error than its
    candidate (the index it would take otherwise) adds that excess: the encoder would keep it. A
    sample beyond adds four times the tolerance: it would be coded, which costs far more than
    keeping a nearly right index. Stops once the total is above ``limit``.
    """
    width = previous.shape[1] - 3
    # Samples run in rows from the block's corners: with both inside, no position needs clamping.
    inside = (
        samples[0, 1] + dx >= 0
        and samples[count - 1, 1] + 1 + dx <= width - 1
        and samples[0, 0] + dy >= top
        and samples[count - 1, 0] + dy <= bottom - 1
    )
    total = 0
    for i in range(count):
        sample = samples[np.uint64(i)]
        if inside:
            y = sample[0] + dy
            x = sample[1] + dx
        else:
            y = min(max(sample[0] + dy, top), bottom - 1)
            x = min(max(sample[1] + dx, 0), width - 1)
        entry = np.uint64(previous[np.uint64(y), np.uint64(x + 2)])
        red = sample[2] - palette[entry, 0]
        green = sample[3] - palette[entry, 1]
        blue = sample[4] - palette[entry, 2]
        excess = red * red + green * green + blue * blue - sample[5]
        total += excess if excess <= tolerance else 4 * tolerance
        if total > limit:
            break
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _cheaper(samples, count, previous, palette, dx, dy, top, bottom, tolerance, best, best_x, best_y):
    """(dx, dy) and its cost when it costs less than ``best``, else the best so far; and whether it did."""
    cost = _motion_cost(samples, count, previous, palette, dx, dy, top, bottom, tolerance, best)
    if cost < best:
        return cost, dx, dy, True
    return best, best_x, best_y, False


@numba.njit(cache=True, nogil=True)
def _search_block(samples, count, previous, palette, guesses, vectors, row, b, top, bottom, tolerance, enough, steps, best):
    """The motion vector of block ``b`` of block row ``row``, whose samples cost ``best`` without motion.

    The block tries its left neighbour's vector and its own vector of the last frame coded at the
    same distance (``guesses``), keeps the cheapest by :func:`_motion_cost` (the first of equals,
    no motion first), and, unless the whole block would then keep its moved indices anyway (within
    ``enough``), walks one pixel at a time towards cheaper vectors, at most ``steps`` steps.
    """
    low, high = entropy.MOTION_RANGE
    best_x = 0
    best_y = 0
    for candidate in range(2):
        if best <= enough:
            break
        if candidate == 0:
            if b == 0:
                continue
            cx = int(vectors[row, b - 1, 0])
            cy = int(vectors[row, b - 1, 1])
        else:
            cx = int(guesses[row, b, 0])
            cy = int(guesses[row, b, 1])
        if cx != best_x or cy != best_y:
            best, best_x, best_y, _ = _cheaper(
                samples, count, previous, palette, cx, cy, top, bottom, tolerance, best, best_x, best_y
            )
    back = -1  # the step back to where the walk came from: tried already
    for _ in range(steps):
        if best <= enough:
            break
        taken = -1
        centre_x = best_x
        centre_y = best_y
        for step in range(4):
            if step == back:
                continue
            cx = centre_x + (1 if step == 0 else -1 if step == 1 else 0)
            cy = centre_y + (1 if step == 2 else -1 if step == 3 else 0)
            if cx < low or cx > high or cy < low or cy > high:
                continue
            best, best_x, best_y, cheaper = _cheaper(
                samples, count, previous, palette, cx, cy, top, bottom, tolerance, best, best_x, best_y
            )
            if cheaper:
                taken = step
        if taken < 0:
            break
        back = taken ^ 1
    return best_x, best_y


@numba.njit(cache=True, nogil=True)
def _dithered(frame, offsets):
    """The frame with the ordered-dither pattern added to its colour channels (alpha untouched)."""
    height, width, channels = frame.shape
    targets = np.empty_like(frame)
    for y in range(height):
        for x in range(width):
            offset = np.int32(offsets[y & 7, x & 7])
            for c in range(channels):
                value = np.int32(frame[y, x, c])
                if c < 3:
                    value = min(max(value + offset, 0), 255)
                targets[y, x, c] = value
    return targets


@numba.njit(cache=True, nogil=True)
def _squared_error(frame, palette, indices):
    """Squared error of ``palette[indices]`` against the frame, per row."""
    height, width, channels = frame.shape
    rows = np.zeros(height)
    for y in range(height):
        total = 0
        for x in range(width):
            entry = indices[y, x]
            for c in range(channels):
                difference = np.int32(frame[y, x, c]) - palette[entry, c]
                total += difference * difference
        rows[y] = total
    return rows


@numba.njit(cache=True, nogil=True, inline="always")
def _distance(red, green, blue, alpha, palette, entry, with_alpha):
    """Squared distance from a colour to a palette entry (alpha counted only ``with_alpha``)."""
    dr = red - palette[entry, 0]
    dg = green - palette[entry, 1]
    db = blue - palette[entry, 2]
    total = dr * dr + dg * dg + db * db
    if with_alpha:
        da = alpha - palette[entry, 3]
        total += da * da
    return total
