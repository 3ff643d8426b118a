"""The `zoedepth-jax` command: metric depth maps for images and folders, and checkpoint conversion.

    zoedepth-jax predict photo.jpg holiday_photos/ --out depth_out
    zoedepth-jax convert Intel/zoedepth-nyu-kitti ./zoedepth-nyu-kitti-flax
    zoedepth-jax eval nyu_test/ --dataset nyu --model Intel/zoedepth-nyu
    zoedepth-jax export zoedepth-nk.onnx --format onnx
    zoedepth-jax selfcheck
    zoedepth-jax finetune my_photos/ --val my_val/ --model Intel/zoedepth-nyu --out runs/kitchen

Each command parses its options and calls the library: `inference.folders` (predict), `weights.loading.convert`
(convert), `inference.export` and `inference.onnx_export` (export), `evaluation.folders` (eval), `selfcheck`
(selfcheck), `training.finetune` (finetune). Errors the library raises on purpose (`ZoeDepthError`) are printed
as one line and give exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from zoedepth_jax.errors import ZoeDepthError
from zoedepth_jax.evaluation import folders as evaluation
from zoedepth_jax.evaluation.metrics import CROPS
from zoedepth_jax.files import refuse_to_overwrite
from zoedepth_jax.geometry.camera import DEFAULT_FOV_DEGREES, parse_intrinsics
from zoedepth_jax.geometry.points import EDGE_THRESHOLD
from zoedepth_jax.inference import folders
from zoedepth_jax.inference.estimator import DEFAULT_MODEL, DepthEstimator
from zoedepth_jax.inference.export import export_model, save_exported
from zoedepth_jax.inference.onnx_export import export_onnx
from zoedepth_jax.inference.precision import measure_precision
from zoedepth_jax.modeling.zoedepth import COMPUTE_DTYPES, ROUTINGS
from zoedepth_jax.selfcheck import (
    DEFAULT_MODELS,
    EXAMPLE_MODEL,
    EXAMPLE_PICTURES,
    exit_status,
    selfcheck,
    verdict_table,
)
from zoedepth_jax.selfcheck.checks import EXIT_FAILED, EXIT_INCOMPLETE
from zoedepth_jax.selfcheck.expected import FIXTURE_FOLDER
from zoedepth_jax.selfcheck.images import EXAMPLE_PHOTO
from zoedepth_jax.weights.loading import convert, from_pretrained

DEFAULT_OUT = "depth_out"

_DESCRIPTION = """\
ZoeDepth metric monocular depth in JAX: estimates, for every pixel of a photo, its distance from the camera
in meters. Also runs Depth Anything (V1, V2; relative or metric) checkpoints: --model depth-anything/...

  zoedepth-jax predict photo.jpg --out depth_out        depth maps for images and folders
  zoedepth-jax convert Intel/zoedepth-nyu ./nyu-flax   a checkpoint as a folder that loads without torch
  zoedepth-jax export model.jaxexport                   the forward pass as StableHLO (or --format onnx)
  zoedepth-jax eval nyu_test/ --dataset nyu             depth metrics against ground truth (folder of pairs)
  zoedepth-jax selfcheck                                the released checkpoints against transformers, here
  zoedepth-jax finetune photos/ --out runs/mine         fine-tune on images with depth PNGs (a folder of pairs)

Run `zoedepth-jax COMMAND --help` for the options of each command."""

_PREDICT_DESCRIPTION = """\
Estimates depth for each IMAGE (a file, or a folder searched recursively for .jpg/.png/.bmp/.tif/.webp files)
and writes into --out, per image, named after it (photo.jpg gives photo_depth.png, ...). For a metric model
(ZoeDepth, the default, or a Depth Anything Metric checkpoint):

  <name>_depth.png        depth as a 16-bit greyscale PNG of MILLIMETRES (uint16: 1235 = 1.235 m;
                          0..65535 = 0..65.535 m, farther is clipped to 65535), the KITTI convention
  <name>_depth_color.png  a coloured picture for viewing (near is bright, far is dark); --no-color skips it
  <name>_depth.npy        with --npy: the depth as float32 METERS (numpy.load), exact

For a RELATIVE model (Depth Anything's relative checkpoints, e.g. --model depth-anything/Depth-Anything-V2-Small-hf),
whose depth is affine-invariant inverse depth (larger is nearer, no unit, NOT meters), the files say so:

  <name>_relative_depth.png        16-bit PNG normalised per image: 0 = farthest pixel, 65535 = nearest; the
                                   map's minimum and maximum are in the PNG's text chunks relative_depth_min/max
  <name>_relative_depth_color.png  a coloured picture (near is bright)
  <name>_relative_depth.npy        with --npy: the model's values as float32, exact
and the options that need meters (--ply, --glb) are refused; so are --flip and --uncertainty, which are ZoeDepth's.

Every output has the size of its source image. Images found in a folder keep their sub-folder under --out.
Images are prepared exactly as transformers' processor for the model does (ZoeDepth: reflect padding, resize to a
multiple of 32 near 384x512, and by default also the mirrored image, the two depths averaged: --no-flip halves the
time; Depth Anything: resize to a multiple of 14 with one side near 518). Outputs that already exist are skipped,
so an interrupted run resumes where it stopped (--overwrite redoes them). An image that cannot be read is reported
and skipped; the others go on and the exit status is 1.

Works offline with a local checkpoint folder: --model ./zoedepth-nyu-kitti (see `zoedepth-jax convert`)."""

_CONVERT_DESCRIPTION = """\
Reads a checkpoint (a Hugging Face hub id such as Intel/zoedepth-nyu-kitti, a local folder holding
config.json and model.safetensors / pytorch_model.bin / flax_model.safetensors, or an original isl-org
ZoeD_M12_N/K/NK.pt file, which needs torch and is read safely) and writes it to OUT as
config.json + flax_model.safetensors (+ preprocessor_config.json when the source has one), a folder that
`predict --model OUT` and `from_pretrained(OUT)` load quickly and without torch."""


_EXPORT_DESCRIPTION = """\
Writes the model's forward pass for pixel_values [B, HEIGHT, WIDTH, 3] (NHWC, normalised as the image processor
does), in one of two formats:

  --format jax   a jax.export artifact (StableHLO), which `zoedepth_jax.inference.export.load_exported(OUT)` (or
                 jax.export.deserialize) runs without this package's model code. The weights are an input of the
                 artifact, not part of it: load them with from_pretrained. Outputs (predicted_depth [B, H, W],
                 domain_logits [B, 2], or [B, 0] for single-head models).
  --format onnx  an ONNX graph with the weights inside (needs the onnx extra: pip install 'zoedepth-jax[onnx]'),
                 for ONNX Runtime, TensorRT or OpenVINO. Input pixel_values, outputs predicted_depth
                 (predicted_relative_depth for a Depth Anything relative model) and, for nyu-kitti,
                 domain_logits; any batch size; each image routed to its head by its own logits.

HEIGHT and WIDTH are multiples of the model's patch size: 16 for ZoeDepth on BEiT, 14 for the DINOv2 models
(Depth Anything, ZoeDepth on DINOv2). Default: 384x512 for patch 16, 392x518 for patch 14."""


def _add_command(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _add_estimator_options(parser: argparse.ArgumentParser) -> None:
    """The options of `DepthEstimator` that predict and eval share."""
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="images per model call (default: 1 per device, so one on a single CPU or GPU)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the prediction for the mirrored image, as the original ZoeDepth does (default: on for "
        "ZoeDepth; Depth Anything has no such average, and --flip is refused for it)",
    )
    parser.add_argument(
        "--dtype",
        choices=(*COMPUTE_DTYPES, "auto"),
        default="float32",
        help="compute type of the backbone and neck: float32 (default, exact), bfloat16 (depth within ~0.4%% at "
        "the median; faster on GPU/TPU and on some CPUs, slower on others), or auto: the faster of the two on "
        "this machine, by timing a few matmuls of the model's shapes first (it says which it picked); weights "
        "stay float32",
    )
    parser.add_argument(
        "--keep-aspect-ratio",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="resize keeping the aspect ratio (the released setting, the original's 'infer' mode), or, with "
        "--no-keep-aspect-ratio, to the processor's fixed size (ZoeDepth: 384x512, the original's 'eval' mode; "
        "Depth Anything: 518x518) (default: the checkpoint's)",
    )
    parser.add_argument(
        "--routing",
        choices=ROUTINGS,
        default="per_image",
        help="for models with several heads (nyu-kitti: indoor/outdoor): per_image (default) lets each image "
        "choose its head; batch applies transformers' one-head-per-batch rule (same result for one image; "
        "refused for single-head Depth Anything)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _estimator_from_args(args: argparse.Namespace) -> DepthEstimator:
    """The `DepthEstimator` that the options of `_add_estimator_options` describe."""
    dtype = args.dtype
    if dtype == "auto":
        timing = measure_precision()
        dtype = timing.fastest
        print(f"--dtype auto: {timing.describe()}", file=sys.stderr)
    return DepthEstimator(
        args.model,
        flip=args.flip,
        batch_size=args.batch_size,
        dtype=COMPUTE_DTYPES[dtype],
        routing=args.routing,
        keep_aspect_ratio=args.keep_aspect_ratio,
        uncertainty=getattr(args, "uncertainty", False),
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoedepth-jax", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_predict_parser(commands)
    _add_convert_parser(commands)
    _add_export_parser(commands)
    _add_eval_parser(commands)
    _add_selfcheck_parser(commands)
    _add_finetune_parser(commands)
    return parser


def _add_predict_parser(commands) -> None:
    predict = _add_command(
        commands,
        "predict",
        help="depth maps for images and folders (16-bit PNGs, colour previews, optional .npy)",
        description=_PREDICT_DESCRIPTION,
    )
    predict.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files and/or folders of images")
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="ID_OR_DIR",
        help=f"hub id or local checkpoint folder, ZoeDepth or Depth Anything (default: {DEFAULT_MODEL}, indoor "
        "and outdoor; downloaded once)",
    )
    predict.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"folder for the outputs (default: {DEFAULT_OUT})"
    )
    _add_estimator_options(predict)
    predict.add_argument(
        "--npy",
        action="store_true",
        help="also write the exact float32 map: <name>_depth.npy (meters) or <name>_relative_depth.npy (relative)",
    )
    predict.add_argument("--no-color", action="store_true", help="do not write the colour preview")
    predict.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write each pixel's depth standard deviation under the model's bin distribution: a picture "
        "<name>_depth_std.png (bright = uncertain) and, with --npy, <name>_depth_std.npy (float32 meters); "
        "ZoeDepth only",
    )
    _add_3d_options(predict)
    predict.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = predict.add_argument_group(
        "multi-host (TPU pods, multi-node GPU)",
        "With --distributed, every process runs the same command; each takes every N-th image and writes its own "
        "outputs, and the first prints the totals. Without the three options jax finds them in the cluster's "
        "environment (TPU, SLURM, Open MPI, ...).",
    )
    cluster.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize first")
    cluster.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    cluster.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    cluster.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    predict.set_defaults(func=_predict)


def _add_3d_options(predict: argparse.ArgumentParser) -> None:
    three_d = predict.add_argument_group(
        "3D (needs the 3d extra: pip install 'zoedepth-jax[3d]'; and a metric model)",
        "Points in meters from the depth map at the photo's size, coloured by the photo: the PLY in the camera "
        "frame (x right, y down, z forward), the GLB in glTF's (x right, y up, z backward). Without --intrinsics "
        "the camera has a 55 degree horizontal field of view with the principal point at the centre, as the "
        "original ZoeDepth assumes.",
    )
    three_d.add_argument("--ply", action="store_true", help="write the point cloud as <name>.ply (binary)")
    three_d.add_argument("--glb", action="store_true", help="write a mesh as <name>.glb (grid triangles, colours)")
    camera = three_d.add_mutually_exclusive_group()
    camera.add_argument(
        "--fov", type=float, default=DEFAULT_FOV_DEGREES, metavar="DEG", help="horizontal field of view"
    )
    camera.add_argument(
        "--intrinsics",
        type=_intrinsics,
        metavar="FX,FY,CX,CY",
        help="the photo's camera, in pixels of the photo as stored (after its EXIF rotation)",
    )
    three_d.add_argument(
        "--edge-threshold",
        type=float,
        default=EDGE_THRESHOLD,
        metavar="M",
        help=f"drop points and triangles where depth changes by more than M meters per pixel (default "
        f"{EDGE_THRESHOLD}, the original demo's)",
    )
    three_d.add_argument("--keep-edges", action="store_true", help="keep every point and triangle")


def _intrinsics(text: str):
    try:
        return parse_intrinsics(text)
    except ZoeDepthError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_convert_parser(commands) -> None:
    convert = _add_command(
        commands,
        "convert",
        help="convert a checkpoint (hub id or folder) into a Flax-native folder that loads without torch",
        description=_CONVERT_DESCRIPTION,
    )
    convert.add_argument(
        "src",
        metavar="SRC",
        help="hub id (e.g. Intel/zoedepth-nyu-kitti), local checkpoint folder, ZoeD_M12_*.pt or "
        "depth_anything_metric_depth_*.pt",
    )
    convert.add_argument(
        "--variant",
        choices=["N", "K", "NK", "indoor", "outdoor"],
        help="for a .pt file: its variant, ZoeD_M12 N, K or NK (default: detected from its keys), or Depth Anything V1 "
        "metric indoor or outdoor (default: from the file name, which says it as released; both files have the same "
        "keys)",
    )
    convert.add_argument(
        "--kitti-max-depth-80",
        action="store_true",
        help="for ZoeD_M12_K / zoedepth-kitti: bins over 1e-3..80 m instead of the released 10 m",
    )
    convert.add_argument("out", metavar="OUT", help="folder to write config.json and flax_model.safetensors into")
    convert.add_argument("--overwrite", action="store_true", help="replace the files if OUT already holds them")
    convert.set_defaults(func=_convert)


def _add_export_parser(commands) -> None:
    export = _add_command(
        commands,
        "export",
        help="write the model as a serialized StableHLO artifact (jax.export) for one input size",
        description=_EXPORT_DESCRIPTION,
    )
    export.add_argument("out", metavar="OUT", help="file to write, e.g. zoedepth-384x512.jaxexport")
    export.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR", help="hub id or local folder")
    export.add_argument(
        "--height", type=int, default=None, help="input height in pixels, a multiple of the patch size (16 or 14)"
    )
    export.add_argument(
        "--width", type=int, default=None, help="input width in pixels, a multiple of the patch size (16 or 14)"
    )
    export.add_argument("--format", choices=("jax", "onnx"), default="jax", help="the file's format (default: jax)")
    export.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="fixed batch size of a jax artifact (default: any batch; an ONNX graph takes any batch)",
    )
    export.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset (default: 17)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export.set_defaults(func=_export)


def _predict(args: argparse.Namespace) -> int:
    import jax

    if args.distributed:
        _initialize_distributed(args)
    first_process = jax.process_index() == 0
    out_dir = Path(args.out)
    jobs, missing = folders.collect_jobs(args.inputs, out_dir)
    if first_process:  # every process sees the same inputs: report (and count) the missing ones once
        for name in missing:
            print(f"error: {name}: no such file or folder (skipped)", file=sys.stderr)
    jobs = folders.shard_for_process(jobs, jax.process_index(), jax.process_count())
    summary = folders.Summary(failed=len(missing) if first_process else 0)
    if jobs:  # the model says whether its depth is relative, which names the outputs: load it first
        estimator = _estimator_from_args(args)
        kinds = folders.Outputs(
            npy=args.npy,
            color=not args.no_color,
            uncertainty=args.uncertainty,
            ply=args.ply,
            glb=args.glb,
            intrinsics=args.intrinsics,
            fov_degrees=args.fov,
            edge_threshold=None if args.keep_edges else args.edge_threshold,
            relative=estimator.relative,
        )
        todo = folders.pending_jobs(jobs, kinds, args.overwrite)
        summary.skipped = len(jobs) - len(todo)
        if summary.skipped:
            message = f"{summary.skipped} image(s) already done in {out_dir}, skipped (--overwrite redoes them)"
            print(message, file=sys.stderr)
        if todo:
            ran = folders.run_jobs(todo, estimator, kinds, progress=not args.no_progress)
            summary.done, summary.failed = ran.done, summary.failed + ran.failed
    total = folders.total_over_processes(summary)
    if first_process:
        if not jobs and not missing and jax.process_count() == 1:
            print("no images found in the given folders", file=sys.stderr)
        processes = f" by {jax.process_count()} processes" if jax.process_count() > 1 else ""
        print(
            f"{total.done} done, {total.skipped} skipped, {total.failed} failed{processes}; outputs in {out_dir}",
            file=sys.stderr,
        )
    return 1 if total.failed else 0


def _initialize_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize`, from the options given or, without them, from the cluster's environment."""
    import jax

    options = {
        "coordinator_address": args.coordinator,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    try:
        jax.distributed.initialize(**{name: value for name, value in options.items() if value is not None})
    except Exception as e:  # jax raises ValueError/RuntimeError depending on what is missing
        raise ZoeDepthError(f"--distributed: jax.distributed.initialize failed: {e}") from None


def _convert(args: argparse.Namespace) -> int:
    done = convert(
        args.src,
        args.out,
        variant=args.variant,
        kitti_max_depth_80=args.kitti_max_depth_80,
        overwrite=args.overwrite,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(f"converted {args.src} -> {done.out}")
    print(f"  parameters:    {done.num_parameters:,}")
    print(f"  bytes written: {done.num_bytes:,} ({done.num_bytes / 2**20:.1f} MiB)")
    print(f"  seconds:       {done.seconds:.1f}")
    return 0


# export's default input size by patch size: the released ZoeDepth size (BEiT, 16) and Depth Anything V1 metric's
# (DINOv2, 14).
_EXPORT_SIZES = {16: (384, 512), 14: (392, 518)}


def _export(args: argparse.Namespace) -> int:
    if args.format == "onnx" and args.batch_size is not None:
        raise ZoeDepthError("--batch-size applies to --format jax; an ONNX graph takes any batch size")
    if args.format == "jax" and args.opset is not None:
        raise ZoeDepthError("--opset applies to --format onnx")
    out = Path(args.out)
    refuse_to_overwrite([out], args.overwrite)  # before the load and the trace, which take a while
    model, variables = from_pretrained(args.model)
    patch = model.config.backbone_config.patch_size
    default_height, default_width = _EXPORT_SIZES.get(patch, (None, None))
    height = args.height if args.height is not None else default_height
    width = args.width if args.width is not None else default_width
    if height is None or width is None:
        raise ZoeDepthError(f"the model's patch size is {patch}: give --height and --width, multiples of {patch}")
    if args.format == "onnx":
        export_onnx(model, variables, out, height, width, overwrite=args.overwrite, opset=args.opset)
    else:
        exported = export_model(model, variables, height, width, args.batch_size)
        save_exported(out, exported, overwrite=args.overwrite)
    batch = "any batch size" if args.batch_size is None else f"batch {args.batch_size}"
    print(f"exported {args.model} for {height}x{width}, {batch} -> {out} ({out.stat().st_size:,} bytes)")
    return 0


_EVAL_DESCRIPTION = """\
Evaluates a model on FOLDER (searched recursively): every image <name>.jpg/.png/... with its ground truth
<name>_depth.png beside it, a 16-bit greyscale PNG of depth x --depth-scale (0 = no depth). Prints the original
ZoeDepth metrics (delta1..3, abs_rel, sq_rel, rmse, rmse_log, log10, silog), each computed per image and
averaged over images: the prediction (for ZoeDepth averaged with the mirrored image's, unless --no-flip) at the
image's size, resized to the ground truth's if needed, clipped to [--min-depth, --max-depth]; pixels whose ground
truth lies strictly inside that range and inside the crop are compared. The model must predict meters (ZoeDepth,
a Depth Anything Metric checkpoint): relative models are refused.

--dataset presets, as the original evaluation (each option overrides its part):
  nyu    depth 0.001..10 m, Eigen's NYU crop (rows 45:471, columns 41:601 of 480x640), PNG scale 1000 (mm)
  kitti  depth 0.001..80 m, Garg's crop, PNG scale 256 (KITTI's ground-truth PNGs)"""


def _add_eval_parser(commands) -> None:
    evaluate = _add_command(
        commands,
        "eval",
        help="depth metrics (delta1, abs_rel, rmse, ...) on a folder of images with ground-truth depth PNGs",
        description=_EVAL_DESCRIPTION,
    )
    evaluate.add_argument("folder", metavar="FOLDER", help="images with <name>_depth.png ground truth beside them")
    evaluate.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR", help="hub id or checkpoint folder")
    evaluate.add_argument("--dataset", choices=("nyu", "kitti"), default="nyu", help="settings preset (default nyu)")
    evaluate.add_argument("--depth-scale", type=float, metavar="S", help="ground-truth PNG value per meter")
    evaluate.add_argument("--min-depth", type=float, metavar="M", help="smallest valid depth, meters")
    evaluate.add_argument("--max-depth", type=float, metavar="M", help="largest valid depth, meters")
    evaluate.add_argument("--crop", choices=CROPS, help="evaluation crop (default: the dataset's)")
    _add_estimator_options(evaluate)
    evaluate.add_argument("--per-image", action="store_true", help="also print a row per image")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    overrides = {"depth_scale": args.depth_scale, "min_depth": args.min_depth, "max_depth": args.max_depth}
    overrides["crop"] = args.crop
    settings = dataclasses.replace(
        evaluation.DATASETS[args.dataset], **{name: value for name, value in overrides.items() if value is not None}
    )
    folder = Path(args.folder)
    if not folder.is_dir():
        raise ZoeDepthError(f"{folder} is not a folder")
    pairs, unpaired = evaluation.find_pairs(folder)
    for image in unpaired:
        print(f"warning: {image}: no {image.stem}{evaluation.DEPTH_SUFFIX} beside it (skipped)", file=sys.stderr)
    if not pairs:
        raise ZoeDepthError(f"no image with a <name>{evaluation.DEPTH_SUFFIX} ground truth in {folder}")
    estimator = _estimator_from_args(args)
    with tqdm(total=len(pairs), unit="image", disable=args.no_progress, file=sys.stderr) as bar:
        results = evaluation.evaluate_pairs(estimator, pairs, settings, progress=bar.update)
    failed = [r for r in results if r.error]
    for result in failed:
        print(f"error: {result.error} (skipped)", file=sys.stderr)
    for result in results:
        if result.metrics is None and not result.error:
            print(f"warning: {result.image}: no valid ground-truth pixel (skipped)", file=sys.stderr)
    if all(r.metrics is None for r in results):
        raise ZoeDepthError("no image could be scored")
    processor = estimator.processor
    size = f"{processor.size['height']}x{processor.size['width']}"
    resize = f"keeping the aspect ratio, near {size}" if processor.keep_aspect_ratio else f"fixed {size}"
    print(
        f"{args.model} on {folder}: depth {settings.min_depth:g}..{settings.max_depth:g} m, crop {settings.crop}, "
        f"ground truth {settings.depth_scale:g} per meter, flip {'on' if estimator.flip else 'off'}, resize {resize}"
    )
    print(evaluation.summary_table(results, per_image=args.per_image))
    return 1 if failed else 0


_SELFCHECK_DESCRIPTION = f"""\
Checks this package against transformers on the released checkpoints, on this machine, and prints a verdict
table. For each --model (default: {", ".join(DEFAULT_MODELS)}; hub ids are taken from the hub cache or
downloaded, folders as they are):

  depth vs transformers   zoedepth-jax and transformers on the same pixel values, for the example photo and the
                          two COCO photos of transformers' ZoeDepth integration tests: depth within 1e-4 per pixel
                          (fp32). Needs transformers and torch (pip install 'zoedepth-jax[bench]').
  expected values         for Intel/zoedepth-nyu and Intel/zoedepth-nyu-kitti, the values transformers' own
                          integration tests assert, computed by zoedepth-jax alone (zoedepth_jax/selfcheck/expected.py
                          quotes them with their source).
  precision               which of float32 and bfloat16 is faster here (what --dtype auto picks).

The COCO photos are read from --fixtures (e.g. a transformers checkout's {FIXTURE_FOLDER}), or downloaded once
from transformers' repository. Exit status: 0 every check passed; {EXIT_FAILED} a check failed;
{EXIT_INCOMPLETE} nothing failed but some checks could not run (offline and not cached, transformers missing, ...):
the table says which and why."""


def _add_selfcheck_parser(commands) -> None:
    check = _add_command(
        commands,
        "selfcheck",
        help="verdict on the released checkpoints: zoedepth-jax against transformers and its expected values",
        description=_SELFCHECK_DESCRIPTION,
    )
    check.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="ID_OR_DIR",
        help="a hub id or checkpoint folder to check (repeatable; default: the three released checkpoints)",
    )
    check.add_argument("--fixtures", type=Path, metavar="DIR", help="folder holding the two COCO test photos")
    check.add_argument(
        "--example-image", type=Path, default=EXAMPLE_PHOTO, metavar="PATH", help="the example photo to check on"
    )
    check.add_argument("--cache-dir", metavar="DIR", help="hub cache folder (default: the hub library's)")
    check.add_argument(
        "--write-example",
        nargs="?",
        type=Path,
        const=EXAMPLE_PHOTO.parent,
        metavar="DIR",
        help=f"also write the README's pictures ({', '.join(EXAMPLE_PICTURES)}) from {EXAMPLE_MODEL} into DIR "
        f"(default: {EXAMPLE_PHOTO.parent}), replacing them, once that model's checks have passed",
    )
    check.set_defaults(func=_selfcheck)


def _selfcheck(args: argparse.Namespace) -> int:
    rows = selfcheck(
        args.models or DEFAULT_MODELS,
        fixtures=args.fixtures,
        example_photo=args.example_image,
        cache_dir=args.cache_dir,
        write_example=args.write_example,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(verdict_table(rows))
    return exit_status(rows)


_FINETUNE_DESCRIPTION = f"""\
Fine-tunes a model on TRAIN: a folder of images <name>.jpg/.png/... with their depth <name>_depth.png beside
them (16-bit PNGs of depth x --depth-scale, 0 = no depth), as `eval` reads them, or a text file of
"IMAGE DEPTH" lines (paths relative to the file). Every file is checked before anything runs.

Training follows the original ZoeDepth recipe (AdamW, one-cycle schedule over --steps, the original
augmentations: flip, rotation, colour; --crop adds a random crop, needed when the images differ in size).
The model has a ZoeDepth head: ZoeDepth on BEiT, or on DINOv2 (Depth Anything V1 metric included: its .pt
under the released name, which says indoor or outdoor, or converted first with `zoedepth-jax convert --variant`),
which trains with Depth Anything's groups and rates; Depth Anything V2 models are refused.
RUN_DIR receives metrics.jsonl (losses per step, validation metrics), Orbax checkpoints (checkpoints/), the best
weights by validation abs_rel (best/) and, at the end, the fine-tuned model (final/), which
`zoedepth-jax predict --model RUN_DIR/final` loads. Running the same command again on a RUN_DIR with a
checkpoint resumes it, with the result an uninterrupted run gives; SIGTERM saves a checkpoint and stops.
Exit status: 0 finished; {EXIT_INCOMPLETE} stopped before the last step (SIGTERM, --stop-after) with a checkpoint to
resume from, so that a scheduler can tell the two apart; 2 error.
Needs the train extra: pip install 'zoedepth-jax[train]'."""


def _add_finetune_parser(commands) -> None:
    tune = _add_command(
        commands,
        "finetune",
        help="fine-tune on your images with depth (a folder of pairs or a list file); resumable",
        description=_FINETUNE_DESCRIPTION,
    )
    tune.add_argument("train", metavar="TRAIN", help="folder of images with <name>_depth.png, or a list file")
    tune.add_argument("--out", required=True, metavar="RUN_DIR", help="the run's folder (resumed if it has one)")
    tune.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR", help="hub id, folder or original .pt")
    tune.add_argument("--val", metavar="VAL", help="validation pairs (folder or list file); none by default")
    tune.add_argument("--steps", type=_positive_int, default=1000, help="optimizer steps, the schedule's length")
    tune.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="images per step (16)")
    tune.add_argument("--lr", type=float, metavar="LR", help="peak learning rate of the head (default: the recipe's)")
    tune.add_argument("--dtype", choices=tuple(COMPUTE_DTYPES), default="float32", help="compute dtype")
    tune.add_argument("--seed", type=int, default=0, help="data order, augmentations and dropout (default 0)")
    tune.add_argument("--dataset", choices=("nyu", "kitti"), default="nyu", help="presets, as eval's (nyu)")
    tune.add_argument("--depth-scale", type=float, metavar="S", help="depth PNG value per meter")
    tune.add_argument("--domain", choices=("nyu", "kitti"), help="for nyu-kitti models: the data's domain")
    tune.add_argument("--crop", type=_height_by_width, metavar="HxW", help="random crop, e.g. 480x640")
    tune.add_argument("--rotate", type=float, default=1.0, metavar="DEG", help="random rotation up to DEG (1)")
    tune.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    tune.add_argument("--no-color", action="store_true", help="no random gamma, brightness and colour")
    tune.add_argument("--eval-every", type=_positive_int, metavar="N", help="validate every N steps (steps/4)")
    tune.add_argument("--save-every", type=_positive_int, metavar="N", help="checkpoint every N steps (steps/4)")
    tune.add_argument("--stop-after", type=_positive_int, metavar="K", help="end after step K with a checkpoint")
    tune.add_argument("--keep", type=_positive_int, default=3, metavar="N", help="checkpoints to keep (3)")
    tune.add_argument("--workers", type=int, default=0, metavar="N", help="data worker processes (0)")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = tune.add_argument_group("multi-host", "as for predict: every process runs the same command")
    cluster.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize first")
    cluster.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    cluster.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    cluster.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    tune.set_defaults(func=_finetune)


def _height_by_width(text: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 480x640, got {text!r}") from None
    return height, width


def _finetune(args: argparse.Namespace) -> int:
    try:
        from zoedepth_jax.training.data import Augmentation
        from zoedepth_jax.training.finetune import finetune
        from zoedepth_jax.training.host_memory import retain_freed_memory
    except ImportError as e:
        raise ZoeDepthError(f"finetune needs the train extra (pip install 'zoedepth-jax[train]'): {e}") from None
    retain_freed_memory()  # before the first computation starts XLA's threads
    if args.distributed:
        _initialize_distributed(args)
    augmentation = Augmentation.for_dataset(
        args.dataset, flip=not args.no_flip, rotate_degrees=args.rotate, crop=args.crop, color=not args.no_color
    )
    result = finetune(
        args.model,
        args.train,
        args.out,
        val=args.val,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        dtype=args.dtype,
        seed=args.seed,
        dataset=args.dataset,
        depth_scale=args.depth_scale,
        domain=args.domain,
        augmentation=augmentation,
        eval_every=args.eval_every,
        save_every=args.save_every,
        stop_after=args.stop_after,
        keep=args.keep,
        worker_count=args.workers,
        progress=not args.no_progress,
    )
    if result.best_validation is not None:
        best = result.best_validation
        print(f"best validation: step {best['step']}, abs_rel {best['abs_rel']:.4f}, delta1 {best['delta1']:.4f}")
    if result.stopped:
        print(f"stopped after step {result.step} with a checkpoint in {result.run_dir}; run again to resume")
        return EXIT_INCOMPLETE
    print(f"finished {result.step} steps; fine-tuned model in {result.final} (predict --model {result.final})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 some images failed, 2 error; `EXIT_INCOMPLETE` when
    selfcheck could not run some checks, or finetune stopped before its last step)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ZoeDepthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
