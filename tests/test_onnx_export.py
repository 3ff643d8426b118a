"""ONNX export (jax2onnx): the file alone, run in ONNX Runtime, agrees with `jax.jit(model.apply)` in fp32, routes
each image of a ZoeD-NK batch by its own logits, and keeps the batch dimension symbolic."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from tolerances import FP32_RELATIVE, depth_relative_error, relative_error

pytest.importorskip("jax2onnx", reason="ONNX export needs jax2onnx (the onnx extra)")
ort = pytest.importorskip("onnxruntime", reason="running the exported graph needs onnxruntime")
onnx = pytest.importorskip("onnx", reason="reading the exported graph needs onnx")

from zoedepth_jax import ArgumentError, OutputExistsError, ZoeDepthError, ZoeDepthOutput, from_pretrained  # noqa: E402
from zoedepth_jax.cli import main as cli_main  # noqa: E402
from zoedepth_jax.inference.onnx_export import DEFAULT_OPSET, export_onnx  # noqa: E402

HEIGHT, WIDTH = 64, 96
NK_IMAGE_SEED = 3  # test images whose router margins differ, so a bias between them splits the batch


def nhwc(images):
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def run_onnx(path, pixels) -> list[np.ndarray]:
    onnx_runtime = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return onnx_runtime.run(None, {"pixel_values": pixels})


def steered_nyu_kitti(folder):
    """A tiny ZoeD-NK checkpoint whose router sends image 0 and image 1 of `test_images(2, ..., NK_IMAGE_SEED)` to
    different heads: the KITTI - NYU bias is moved midway between the two images' margins."""
    hf_model = reference.build("nyu-kitti", folder, seed=7)
    model, variables = from_pretrained(folder)
    logits = np.asarray(jax.jit(model.apply)(variables, nhwc(mixed_images())).domain_logits)
    margins = logits[:, 1] - logits[:, 0]
    assert abs(margins[0] - margins[1]) > 1e-3, "the two images need distinct router margins"
    reference.steer_router(hf_model, -(margins[0] + margins[1]) / 2)
    hf_model.save_pretrained(folder)
    return folder


def mixed_images():
    return reference.test_images(2, HEIGHT, WIDTH, seed=NK_IMAGE_SEED)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{variant: (checkpoint folder, ONNX file)}, each exported once for the module. The nyu file is written over
    an existing one with overwrite=True; the kitti one by `zoedepth-jax export --format onnx`."""
    files = {}
    for seed, variant in enumerate(("nyu", "kitti", "nyu-kitti")):
        folder = tmp_path_factory.mktemp(variant)
        if variant == "nyu-kitti":
            steered_nyu_kitti(folder)
        else:
            reference.build(variant, folder, seed=seed)
        path = tmp_path_factory.mktemp(f"{variant}-onnx") / f"{variant}.onnx"
        if variant == "nyu":
            path.write_bytes(b"an older export")
        if variant == "kitti":  # through the command line
            command = ["export", str(path), "--model", str(folder), "--format", "onnx"]
            assert cli_main([*command, "--height", str(HEIGHT), "--width", str(WIDTH)]) == 0
        else:
            model, variables = from_pretrained(folder)
            assert export_onnx(model, variables, path, HEIGHT, WIDTH, overwrite=variant == "nyu") == path
        files[variant] = (folder, path)
    return files


@pytest.mark.parametrize("variant", ["nyu", "kitti"])
def test_single_head_matches_jax(exported, variant):
    folder, path = exported[variant]
    model, variables = from_pretrained(folder)
    pixels = nhwc(reference.test_images(2, HEIGHT, WIDTH, seed=11))
    expected = jax.jit(model.apply)(variables, jnp.asarray(pixels)).predicted_depth
    for image in np.asarray(expected):  # not a near-constant map that would agree for the wrong reasons
        assert image.std() / image.mean() > 0.05
    (depth,) = run_onnx(path, pixels)
    assert depth_relative_error(depth, expected) <= FP32_RELATIVE


def test_nyu_kitti_routes_each_image_in_the_graph(exported):
    """One batch holding an image the router sends to NYU and one it sends to KITTI: the graph picks each image's
    head from its own logits, as the model's per_image routing does, where one head for the batch would not."""
    folder, path = exported["nyu-kitti"]
    pixels = nhwc(mixed_images())
    model, variables = from_pretrained(folder)
    expected = jax.jit(model.apply)(variables, jnp.asarray(pixels))
    depth, logits = run_onnx(path, pixels)
    jax_heads = np.asarray(expected.domain_logits).argmax(-1)
    assert sorted(jax_heads) == [0, 1], "the steered router should split the batch between the heads"
    np.testing.assert_array_equal(logits.argmax(-1), jax_heads)
    assert relative_error(logits, expected.domain_logits) <= FP32_RELATIVE
    assert depth_relative_error(depth, expected.predicted_depth) <= FP32_RELATIVE
    batch_model, _ = from_pretrained(folder, routing="batch")
    one_head = jax.jit(batch_model.apply)(variables, jnp.asarray(pixels)).predicted_depth
    assert depth_relative_error(depth, one_head) > 100 * FP32_RELATIVE  # so the comparison above tells them apart


def test_one_file_serves_any_batch_size(exported):
    folder, path = exported["nyu-kitti"]
    model, variables = from_pretrained(folder)
    apply = jax.jit(model.apply)
    for batch in (1, 3):
        pixels = nhwc(reference.test_images(batch, HEIGHT, WIDTH, seed=20 + batch))
        expected = apply(variables, jnp.asarray(pixels))
        depth, logits = run_onnx(path, pixels)
        assert depth.shape == (batch, HEIGHT, WIDTH) and logits.shape == (batch, 2)
        assert depth_relative_error(depth, expected.predicted_depth) <= FP32_RELATIVE
        assert relative_error(logits, expected.domain_logits) <= FP32_RELATIVE


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(
    "variant, outputs",
    [
        ("nyu", {"predicted_depth": ["batch", HEIGHT, WIDTH]}),
        ("nyu-kitti", {"predicted_depth": ["batch", HEIGHT, WIDTH], "domain_logits": ["batch", 2]}),
    ],
)
def test_graph_interface_and_embedded_weights(exported, variant, outputs):
    folder, path = exported[variant]
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert [(i.name, _dims(i)) for i in graph.graph.input] == [("pixel_values", ["batch", HEIGHT, WIDTH, 3])]
    assert {o.name: _dims(o) for o in graph.graph.output} == outputs
    float32 = onnx.TensorProto.FLOAT
    assert {v.type.tensor_type.elem_type for v in [*graph.graph.input, *graph.graph.output]} == {float32}
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    # Every weight is inside the file: no external data, and the initializers hold at least the parameter count.
    initializers = graph.graph.initializer
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in initializers)
    _, variables = from_pretrained(folder)
    parameters = sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables))
    assert sum(int(np.prod(t.dims)) for t in initializers) >= parameters
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind


def test_refuses_to_overwrite_unless_asked(exported, tmp_path):
    folder, _ = exported["nyu"]
    model, variables = from_pretrained(folder)
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="model.onnx"):
        export_onnx(model, variables, existing, HEIGHT, WIDTH)
    assert existing.read_bytes() == b"keep me"
    # The nyu file of the fixture was written over an existing file with overwrite=True: it is a graph now.
    assert onnx.load(str(exported["nyu"][1])).graph.input[0].name == "pixel_values"


def test_bad_requests(exported, tmp_path):
    folder, _ = exported["nyu-kitti"]
    model, variables = from_pretrained(folder, routing="batch")
    with pytest.raises(ArgumentError, match="per_image"):
        export_onnx(model, variables, tmp_path / "nk.onnx", HEIGHT, WIDTH)
    model, variables = from_pretrained(folder)
    with pytest.raises(ZoeDepthError, match="multiples of the patch size 16"):
        export_onnx(model, variables, tmp_path / "nk.onnx", 60, WIDTH)
    bf16_model, bf16_variables = from_pretrained(folder, dtype=jnp.bfloat16)
    with pytest.raises(ArgumentError, match="fp32"):
        export_onnx(bf16_model, bf16_variables, tmp_path / "nk.onnx", HEIGHT, WIDTH)
    assert not list(tmp_path.iterdir())


def test_missing_jax2onnx_says_how_to_install(exported, tmp_path, monkeypatch):
    folder, _ = exported["nyu"]
    model, variables = from_pretrained(folder)
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` raises ImportError
    with pytest.raises(ZoeDepthError, match=r"pip install 'zoedepth-jax\[onnx\]'"):
        export_onnx(model, variables, tmp_path / "nyu.onnx", HEIGHT, WIDTH)
    assert not list(tmp_path.iterdir())


def test_unconvertible_primitive_is_named(tmp_path):
    """A forward using a primitive jax2onnx cannot lower (`eigh` of a 3x3 matrix): a ZoeDepthError naming it, and
    no file written."""
    matrix = jnp.asarray(np.diag([1.0, 2.0, 3.0]).astype(np.float32))

    def apply(variables, pixel_values):
        return ZoeDepthOutput(pixel_values[..., 0] * jnp.linalg.eigh(matrix)[0].sum())

    config = SimpleNamespace(backbone_config=SimpleNamespace(patch_size=16), bin_configurations=("metric",))
    model = SimpleNamespace(config=config, routing="per_image", dtype=jnp.float32, apply=apply)
    with pytest.raises(ZoeDepthError, match="primitive 'eigh'"):
        export_onnx(model, {}, tmp_path / "model.onnx", HEIGHT, WIDTH)
    assert not list(tmp_path.iterdir())
