"""Depth maps for many image files: the job list, resume, overlapped reading and writing, and multi-process runs.

Reading (decode + preprocess) and writing (PNG encode + file writes) run on worker threads while the model
computes: the next chunk of images is prepared while the current one is on the device, and outputs are written
while the next one computes. At most `PREFETCH_CHUNKS` chunks are prepared ahead and `MAX_PENDING_WRITES` depth
maps wait to be written, so memory stays flat for folders of any size.

Multi-process (multi-host) runs: every process builds the same job list (inputs sorted), takes every
`process_count`-th job starting at its own index, runs it on its local devices, and writes its own outputs; the
counts are summed over processes at the end, so every input is counted exactly once.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoedepth_jax.errors import ArgumentError, ZoeDepthError
from zoedepth_jax.files import write_atomically
from zoedepth_jax.geometry.camera import DEFAULT_FOV_DEGREES, intrinsics_from_fov
from zoedepth_jax.geometry.files import write_mesh, write_point_cloud
from zoedepth_jax.geometry.points import EDGE_THRESHOLD, depth_edges_mask, depth_to_points, to_opengl
from zoedepth_jax.inference import depth_images
from zoedepth_jax.inference.estimator import METRIC_DEPTH_KEY, RELATIVE_DEPTH_KEY, DepthEstimator
from zoedepth_jax.inference.images import load_image

# Files a folder is searched for (case-insensitive); a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
CHUNK_BATCHES = 4  # images per chunk, in batches: enough for several full batches per processed shape
PREFETCH_CHUNKS = 2  # chunks being read and prepared ahead of the one on the device
READ_THREADS = 2
WRITE_THREADS = 2
MAX_PENDING_WRITES = 16
# zlib level of the PNGs: level 1 encodes several times faster than Pillow's default 6, for somewhat larger files
# (benchmarks/RESULTS.md, pipeline and I/O); on a CPU the encoder competes with the model for the same cores.
PNG_COMPRESS_LEVEL = 1


# The name of each output: the source's name (without its extension) followed by this.
OUTPUT_SUFFIXES = {
    "depth_png": "_depth.png",
    "color": "_depth_color.png",
    "npy": "_depth.npy",
    "std_png": "_depth_std.png",
    "std_npy": "_depth_std.npy",
    "ply": ".ply",
    "glb": ".glb",
}
# For a relative model the depth files say so, so that they cannot be taken for meters (or for another model's
# depth of the same image); its other outputs (3D, uncertainty) do not exist.
RELATIVE_OUTPUT_SUFFIXES = {
    "depth_png": "_relative_depth.png",
    "color": "_relative_depth_color.png",
    "npy": "_relative_depth.npy",
}


@dataclass(frozen=True)
class Outputs:
    """Which files `predict` writes for each image, named after it (photo.jpg -> photo_depth.png, ...; for
    relative depth photo_relative_depth.png, ...). The 16-bit depth PNG is always written, and last: it marks the
    image as done."""

    npy: bool = False  # <name>_depth.npy, float32 meters (and <name>_depth_std.npy with uncertainty)
    color: bool = True  # <name>_depth_color.png, a picture of the depth
    uncertainty: bool = False  # <name>_depth_std.png, a picture of the standard deviation (needs depth_std)
    ply: bool = False  # <name>.ply, the point cloud with the photo's colours
    glb: bool = False  # <name>.glb, the mesh with the photo's colours
    # The camera of the 3D files: the photo's own (fx, fy, cx, cy) in its pixels, or else a field of view.
    intrinsics: tuple[float, float, float, float] | None = None
    fov_degrees: float = DEFAULT_FOV_DEGREES
    edge_threshold: float | None = EDGE_THRESHOLD  # drop 3D points and triangles at depth jumps; None keeps all
    # The depth is relative (`DepthEstimator.relative`): the files of RELATIVE_OUTPUT_SUFFIXES, the PNG normalised
    # per image (`depth_images.relative_depth_to_png16`); no 3D files, which need meters.
    relative: bool = False

    def __post_init__(self):
        if self.relative and (self.ply or self.glb):
            raise ArgumentError(
                "3D outputs (--ply, --glb) need depth in meters; a relative model's depth (affine-invariant "
                "inverse depth, no unit) cannot place points: use a metric model (ZoeDepth, or a Depth Anything "
                "Metric checkpoint)"
            )

    @property
    def depth_key(self) -> str:
        """The key of the depth map in the estimator's results."""
        return RELATIVE_DEPTH_KEY if self.relative else METRIC_DEPTH_KEY


@dataclass(frozen=True)
class Job:
    """One image to do: where it is read from and the path its outputs are named after (`<base>_depth.png`)."""

    source: Path
    base: Path

    @property
    def stem(self) -> Path:  # the depth outputs' common stem: <base>_depth
        return self.base.with_name(self.base.name + "_depth")

    def outputs(self, kinds: Outputs) -> dict[str, Path]:
        """The files `kinds` asks for, by kind; "depth_png" (the done marker) first."""
        wanted = {
            "depth_png": True,
            "color": kinds.color,
            "npy": kinds.npy,
            "std_png": kinds.uncertainty,
            "std_npy": kinds.uncertainty and kinds.npy,
            "ply": kinds.ply,
            "glb": kinds.glb,
        }
        suffixes = {**OUTPUT_SUFFIXES, **RELATIVE_OUTPUT_SUFFIXES} if kinds.relative else OUTPUT_SUFFIXES
        return {kind: self.base.with_name(self.base.name + suffixes[kind]) for kind, on in wanted.items() if on}


@dataclass
class Summary:
    """What happened to the jobs of a run (or of one process of it)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0

    def as_array(self) -> np.ndarray:
        return np.array([self.done, self.skipped, self.failed], dtype=np.int64)


def collect_jobs(inputs: list[str], out_dir: Path) -> tuple[list[Job], list[str]]:
    """Expands files and folders into jobs; returns them and the inputs that do not exist.

    A folder is searched recursively for IMAGE_SUFFIXES, skipping anything inside `out_dir`, and its images keep
    their relative sub-folder under `out_dir`. Two inputs that would write the same outputs are an error.
    """
    jobs, missing = [], []
    out_resolved = out_dir.resolve()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                if out_resolved in file.resolve().parents:
                    continue  # our own outputs, from an earlier run with --out inside the input folder
                relative = file.relative_to(path)
                jobs.append(Job(file, out_dir / relative.parent / relative.stem))
        elif path.is_file():
            jobs.append(Job(path, out_dir / path.stem))
        else:
            missing.append(name)
    by_stem: dict[Path, list[Path]] = {}
    for job in jobs:
        by_stem.setdefault(job.stem, []).append(job.source)
    clashes = {stem: sources for stem, sources in by_stem.items() if len(sources) > 1}
    if clashes:
        listed = "; ".join(f"{', '.join(map(str, s))} -> {stem}.png" for stem, s in clashes.items())
        raise ZoeDepthError(f"inputs would overwrite each other's outputs: {listed} (rename, or run them separately)")
    return jobs, missing


def depth_of(result: dict, kinds: Outputs) -> np.ndarray:
    """The depth map of an estimator's `result` that `kinds` is for (meters, or relative depth)."""
    if kinds.depth_key not in result:
        raise ArgumentError(
            f"the result holds {sorted(result)}, not {kinds.depth_key!r}: these outputs are for "
            f"{'relative' if kinds.relative else 'metric'} depth; pass Outputs(relative=estimator.relative)"
        )
    return result[kinds.depth_key]


def write_outputs(job: Job, result: dict, kinds: Outputs) -> None:
    """Writes the files `kinds` asks for of one image's `result` (its depth map, and `depth_std`), each
    atomically, the 16-bit depth PNG last."""
    depth = depth_of(result, kinds)
    paths = job.outputs(kinds)
    job.base.parent.mkdir(parents=True, exist_ok=True)
    if kinds.color:
        _write_png(paths["color"], (depth_images.colorize_relative if kinds.relative else depth_images.colorize)(depth))
    if kinds.npy:
        _write_npy(paths["npy"], depth)
    if kinds.uncertainty:
        if "depth_std" not in result:
            raise ArgumentError("uncertainty outputs need an estimator with uncertainty=True")
        _write_png(paths["std_png"], depth_images.colorize_uncertainty(result["depth_std"]))
        if kinds.npy:
            _write_npy(paths["std_npy"], result["depth_std"])
    if kinds.ply or kinds.glb:
        _write_3d(job, depth, kinds, paths)
    if kinds.relative:
        _write_png(paths["depth_png"], *depth_images.relative_depth_to_png16(depth))
    else:
        _write_png(paths["depth_png"], depth_images.depth_to_png16(depth))


def _write_png(path: Path, image, text=None) -> None:
    """Writes `image` as a PNG, with the text chunks `text` (a PngInfo) when given."""
    write_atomically(path, lambda temp: image.save(temp, format="PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=text))


def _write_npy(path: Path, array: np.ndarray) -> None:
    def save(temp: str) -> None:
        with open(temp, "wb") as f:
            np.save(f, array)

    write_atomically(path, save)


def _write_3d(job: Job, depth: np.ndarray, kinds: Outputs, paths: dict[str, Path]) -> None:
    """The point cloud and the mesh of the depth map at the photo's size, coloured with the photo."""
    height, width = depth.shape
    rgb = load_image(job.source, name=str(job.source))  # [H, W, 3], uint8 or float on the 0..255 scale
    colors = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    intrinsics = kinds.intrinsics or intrinsics_from_fov(height, width, kinds.fov_degrees)
    points = np.asarray(depth_to_points(depth, intrinsics))  # [H, W, 3] meters, camera frame
    keep = np.isfinite(depth) & (depth > 0)
    if kinds.edge_threshold is not None:
        keep &= ~np.asarray(depth_edges_mask(depth, kinds.edge_threshold))
    if kinds.ply:  # the camera frame, as point-cloud tools (Open3D, COLMAP) expect
        write_point_cloud(paths["ply"], points, colors, keep, overwrite=True)
    if kinds.glb:  # glTF's frame (y up, the camera looking down -z), so that viewers show it upright
        write_mesh(paths["glb"], np.asarray(to_opengl(points)), colors, keep, overwrite=True)


def depth_summary(depth: np.ndarray, relative: bool = False) -> str:
    """One line on a depth map's range: in meters, or for relative depth without a unit."""
    name, unit = ("relative depth", "") if relative else ("depth", " m")
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return f"{name}: no finite values"
    return f"{name} min {finite.min():.3f}{unit}  median {np.median(finite):.3f}{unit}  max {finite.max():.3f}{unit}"


def pending_jobs(jobs: list[Job], kinds: Outputs, overwrite: bool) -> list[Job]:
    """The jobs still to do: those missing any of their outputs, or all of them with `overwrite`. This is what
    makes an interrupted run resume."""
    return [job for job in jobs if overwrite or not all(path.exists() for path in job.outputs(kinds).values())]


class _Writes:
    """Outputs being written on worker threads, oldest first. Finishing one counts it in `summary` and reports
    it; at most `MAX_PENDING_WRITES` depth maps wait in memory."""

    def __init__(self, pool: ThreadPoolExecutor, summary: Summary, report: Callable[[str], None]):
        self.pool, self.summary, self.report = pool, summary, report
        self.pending: deque[tuple[Job, np.ndarray, bool, Future]] = deque()

    def submit(self, job: Job, result: dict, kinds: Outputs) -> None:
        depth = depth_of(result, kinds)
        self.pending.append((job, depth, kinds.relative, self.pool.submit(write_outputs, job, result, kinds)))
        while len(self.pending) > MAX_PENDING_WRITES:
            self.finish_oldest()

    def finish_all(self) -> None:
        while self.pending:
            self.finish_oldest()

    def finish_oldest(self) -> None:
        job, depth, relative, future = self.pending.popleft()
        try:
            future.result()
        except (OSError, ZoeDepthError) as e:
            self.summary.failed += 1
            self.report(f"error: {job.source}: cannot write outputs: {e}")
            return
        self.summary.done += 1
        self.report(f"{job.source}: {depth.shape[0]}x{depth.shape[1]}  {depth_summary(depth, relative)}")
        bad = int(depth.size - np.count_nonzero(np.isfinite(depth)))
        if bad:
            self.report(
                f"warning: {job.source}: {bad} of {depth.size} depths are not finite; they are stored "
                "as 0 in the 16-bit PNG and drawn as far in the colour image"
            )


def _reads_ahead(chunks: list[list[Job]], pool: ThreadPoolExecutor, estimator: DepthEstimator):
    """Yields each chunk with the futures of its prepared images, keeping `PREFETCH_CHUNKS` chunks being read
    ahead of the one returned."""

    def submit(chunk: list[Job]) -> list[Future]:
        return [pool.submit(estimator.prepare, job.source, str(job.source)) for job in chunk]

    reading = deque(submit(chunk) for chunk in chunks[:PREFETCH_CHUNKS])
    for index, chunk in enumerate(chunks):
        futures = reading.popleft()
        if index + PREFETCH_CHUNKS < len(chunks):
            reading.append(submit(chunks[index + PREFETCH_CHUNKS]))
        yield chunk, futures


def run_jobs(
    jobs: list[Job],
    estimator: DepthEstimator,
    kinds: Outputs,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Runs the model over `jobs` with reading and writing overlapped. Each image's result (or error) is passed to
    `log`; by default it is printed above the progress bar (errors and warnings to stderr)."""
    from tqdm import tqdm

    summary = Summary()
    chunk_size = estimator.batch_size * CHUNK_BATCHES
    chunks = [jobs[start : start + chunk_size] for start in range(0, len(jobs), chunk_size)]
    with (
        ThreadPoolExecutor(READ_THREADS, thread_name_prefix="read") as readers,
        ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="write") as writers,
        tqdm(total=len(jobs), unit="image", disable=not progress, file=sys.stderr) as bar,
    ):

        def report(message: str) -> None:
            if log is not None:
                log(message)
            else:
                bar.write(message, file=sys.stderr if message.startswith(("error", "warning")) else sys.stdout)

        writes = _Writes(writers, summary, report)
        for chunk, futures in _reads_ahead(chunks, readers, estimator):
            ready, prepared = [], []
            for job, future in zip(chunk, futures, strict=True):
                try:
                    prepared.append(future.result())
                    ready.append(job)
                except ZoeDepthError as e:
                    summary.failed += 1
                    report(f"error: {e} (skipped)")
                    bar.update(1)
            for job, result in zip(ready, estimator.predict_prepared(prepared, progress=bar.update), strict=True):
                writes.submit(job, result, kinds)
        writes.finish_all()
    return summary


def shard_for_process(jobs: list[Job], process_index: int, process_count: int) -> list[Job]:
    """This process's share of a job list every process built alike: every `process_count`-th job."""
    return jobs[process_index::process_count]


def total_over_processes(summary: Summary) -> Summary:
    """The counts summed over every process of a `jax.distributed` run (the summary itself when there is one)."""
    import jax

    if jax.process_count() == 1:
        return summary
    from jax.experimental import multihost_utils

    done, skipped, failed = multihost_utils.process_allgather(summary.as_array()).sum(axis=0).tolist()
    return Summary(done, skipped, failed)
