"""fp32 parity with transformers on re-drawn tiny checkpoints: final depth, domain logits and intermediates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from tolerances import FP32_RELATIVE, relative_error

from zoedepth_jax import apply_with_intermediates, from_pretrained
from zoedepth_jax.modeling.layers import traced_forms

SIZES = [(384, 512), (384, 768), (320, 448)]
# (variant, router logit offset): the NK checkpoint is steered to each head in turn.
CHECKPOINTS = [("nyu", 0.0), ("kitti", 0.0), ("nyu-kitti", -50.0), ("nyu-kitti", 50.0)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(transformers model, folder) per checkpoint, built once for the module."""
    built = {}
    for seed, (variant, offset) in enumerate(CHECKPOINTS):
        folder = tmp_path_factory.mktemp(f"{variant}{offset:+.0f}")
        built[(variant, offset)] = (reference.build(variant, folder, seed=seed, logit_offset=offset), folder)
    return built


def nhwc(images):
    return jnp.asarray(images.transpose(0, 2, 3, 1))


def assert_matches(ours: dict, expected: dict):
    """Every tensor transformers produced agrees; the reference itself is not degenerate."""
    depth = expected["predicted_depth"]
    for image in depth:  # depth varies within each image: std/mean well above a near-constant map
        assert image.std() / image.mean() > 0.05, f"degenerate reference depth (std/mean {image.std() / image.mean()})"
    errors = {}
    for name, value in expected.items():
        assert name in ours, f"zoedepth-jax does not produce {name}"
        assert np.std(value) > 1e-3, f"degenerate reference {name}"
        errors[name] = relative_error(ours[name], value)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= FP32_RELATIVE, f"{worst} differs by {errors[worst]:.2e} (all: {errors})"


def _checkpoint_id(checkpoint) -> str:
    variant, offset = checkpoint
    return f"{variant}{'' if not offset else ('-to-kitti' if offset > 0 else '-to-nyu')}"


# Every checkpoint at the first size and every size on the first checkpoint by default; the rest of the grid
# (the same code paths at other sizes) is marked slow to keep the default run short.
GRID = [
    pytest.param(
        checkpoint,
        size,
        id=f"{_checkpoint_id(checkpoint)}-{size[0]}x{size[1]}",
        marks=() if checkpoint == CHECKPOINTS[0] or size == SIZES[0] else pytest.mark.slow,
    )
    for checkpoint in CHECKPOINTS
    for size in SIZES
]


@pytest.mark.parametrize("checkpoint, size", GRID)
def test_matches_transformers(checkpoints, checkpoint, size):
    hf_model, folder = checkpoints[checkpoint]
    images = reference.test_images(2, *size, seed=size[0] + size[1])
    expected = reference.run_reference(hf_model, images)
    model, variables = from_pretrained(folder, routing="batch")  # transformers routes the whole batch
    output, intermediates = apply_with_intermediates(model, variables, nhwc(images))
    ours = dict(intermediates, predicted_depth=output.predicted_depth)
    if output.domain_logits is not None:
        ours["domain_logits"] = output.domain_logits
        chosen = "kitti" if checkpoint[1] > 0 else "nyu"
        assert set(np.asarray(output.domain_logits).argmax(-1)) == {["nyu", "kitti"].index(chosen)}
        assert f"bin_centers_{chosen}" in expected, "the steered head did not run in transformers"
    assert_matches(ours, expected)


@pytest.mark.parametrize("checkpoint", [("nyu", 0.0), ("nyu-kitti", 50.0)], ids=["nyu", "nyu-kitti-to-kitti"])
def test_plain_forms_match_transformers(checkpoints, checkpoint):
    """The forms traced for GPUs and TPUs (whole-tensor attention and convolutions, no loops) keep fp32 parity;
    on this CPU they are chosen with `traced_forms("plain")`."""
    hf_model, folder = checkpoints[checkpoint]
    images = reference.test_images(2, 320, 448, seed=7)
    expected = reference.run_reference(hf_model, images)
    model, variables = from_pretrained(folder, routing="batch")
    with traced_forms("plain"):
        program = str(jax.make_jaxpr(lambda v, x: model.apply(v, x).predicted_depth)(variables, nhwc(images)))
        output, intermediates = apply_with_intermediates(model, variables, nhwc(images))
    assert "scan" not in program and "while" not in program
    ours = dict(intermediates, predicted_depth=output.predicted_depth)
    if output.domain_logits is not None:
        ours["domain_logits"] = output.domain_logits
    assert_matches(ours, expected)


def test_per_image_routing_equals_one_image_at_a_time(tmp_path):
    """Two images the classifier sends to different heads: per_image routing of the batch returns what each
    image returns alone, and that agrees with transformers run on each image alone."""
    hf_model = reference.build("nyu-kitti", tmp_path, seed=7)
    images = reference.test_images(2, 320, 448, seed=3)
    alone = [reference.run_reference(hf_model, images[i : i + 1]) for i in range(2)]
    margins = [a["domain_logits"][0, 1] - a["domain_logits"][0, 0] for a in alone]
    assert abs(margins[0] - margins[1]) > 1e-3, "the two images need distinct router margins"
    reference.steer_router(hf_model, -(margins[0] + margins[1]) / 2)  # moves the decision between the images
    hf_model.save_pretrained(tmp_path)
    alone = [reference.run_reference(hf_model, images[i : i + 1]) for i in range(2)]
    domains = [int(a["domain_logits"].argmax()) for a in alone]
    assert sorted(domains) == [0, 1], "steering should split the images between the heads"

    model, variables = from_pretrained(tmp_path, routing="per_image")
    batched = model.apply(variables, nhwc(images))
    for i in range(2):
        single = model.apply(variables, nhwc(images[i : i + 1]))
        np.testing.assert_array_equal(np.asarray(single.domain_logits).argmax(-1), [domains[i]])
        assert relative_error(batched.predicted_depth[i : i + 1], single.predicted_depth) <= FP32_RELATIVE
        assert relative_error(batched.predicted_depth[i : i + 1], alone[i]["predicted_depth"]) <= FP32_RELATIVE
    # transformers' batch rule sends both images to one head, so at least one image differs from per_image.
    batch_model, _ = from_pretrained(tmp_path, routing="batch")
    together = batch_model.apply(variables, nhwc(images)).predicted_depth
    assert relative_error(together, batched.predicted_depth) > 100 * FP32_RELATIVE


def _offset_against_the_first_image(margins: np.ndarray) -> float | None:
    """A router offset (added to every image's kitti - nyu margin) under which the images split between the heads
    and transformers' batch rule (the sign of the summed margins) differs from the first image's own choice and,
    for three or more images, from the majority of the images' choices; None if there is none. Candidates lie
    midway between the margins that decide a choice, so every decision has room to spare."""
    edges = np.sort(np.concatenate([-margins, [-margins.mean()]]))
    for offset in (edges[:-1] + edges[1:]) / 2:
        own = margins + offset > 0
        together = margins.mean() + offset > 0
        majority = own.sum() * 2 > len(own)
        if 0 < own.sum() < len(own) and together != own[0] and (len(own) < 3 or together != majority):
            return float(offset)
    return None


# 3 images also tell transformers' rule from a majority vote; 2 only from the first image's choice
@pytest.mark.parametrize("batch", [pytest.param(2, marks=pytest.mark.slow), 3])
def test_batch_routing_matches_transformers_on_mixed_batches(tmp_path, batch):
    """routing="batch" on a batch whose images the router sends to different heads: the head transformers'
    rule picks for the whole batch (softmax of the summed logits), with its depth and intermediates, where the
    first image's choice or a majority vote would pick the other head."""
    hf_model = reference.build("nyu-kitti", tmp_path, seed=7)
    for seed in range(20):  # images whose margins allow such a split
        images = reference.test_images(batch, 320, 448, seed=seed)
        logits = np.concatenate(
            [reference.run_reference(hf_model, images[i : i + 1])["domain_logits"] for i in range(batch)]
        )
        offset = _offset_against_the_first_image(logits[:, 1] - logits[:, 0])
        if offset is not None:
            break
    assert offset is not None, "no test images whose router margins allow a mixed batch"
    reference.steer_router(hf_model, offset)
    hf_model.save_pretrained(tmp_path)
    expected = reference.run_reference(hf_model, images)
    own = expected["domain_logits"].argmax(-1)
    chosen = ["nyu", "kitti"][1 - own[0]]
    assert 0 < own.sum() < batch and f"bin_centers_{chosen}" in expected, "the batch should go against image 0"

    model, variables = from_pretrained(tmp_path, routing="batch")
    output, intermediates = apply_with_intermediates(model, variables, nhwc(images))
    assert_matches(
        dict(intermediates, predicted_depth=output.predicted_depth, domain_logits=output.domain_logits), expected
    )
    per_image = from_pretrained(tmp_path, routing="per_image")[0].apply(variables, nhwc(images)).predicted_depth
    assert relative_error(per_image, output.predicted_depth) > 100 * FP32_RELATIVE  # the rules differ here


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=_checkpoint_id)
def test_uncertainty_matches_transformers_internals(checkpoints, checkpoint):
    """depth_std against the spread of transformers' own bin distribution; the depth itself is untouched."""
    hf_model, folder = checkpoints[checkpoint]
    images = reference.test_images(2, 320, 448, seed=5)
    expected = reference.run_reference_depth_std(hf_model, images)
    assert all(image.std() / image.mean() > 0.05 for image in expected), "degenerate reference depth_std"
    model, variables = from_pretrained(folder, routing="batch")
    with_std = jax.jit(lambda v, x: model.apply(v, x, with_uncertainty=True))
    ours = with_std(variables, nhwc(images))
    assert relative_error(ours.depth_std, expected) <= FP32_RELATIVE
    default = jax.jit(model.apply)(variables, nhwc(images))
    assert default.depth_std is None
    np.testing.assert_array_equal(np.asarray(ours.predicted_depth), np.asarray(default.predicted_depth))
    # The default forward is a program of its own, without the spread's square root.
    assert "stablehlo.sqrt" not in jax.jit(model.apply).lower(variables, nhwc(images)).as_text()


def test_perturbing_one_weight_breaks_parity(checkpoints):
    """The parity check can fail: one converted value changed by 1% is caught."""
    hf_model, folder = checkpoints[("kitti", 0.0)]
    images = reference.test_images(1, 384, 512, seed=11)
    expected = reference.run_reference(hf_model, images)
    model, variables = from_pretrained(folder)
    kernel = variables["params"]["backbone"]["encoder"]["layer_2"]["attention"]["attention"]["query"]["kernel"]
    variables["params"]["backbone"]["encoder"]["layer_2"]["attention"]["attention"]["query"]["kernel"] = kernel.at[
        3, 5
    ].multiply(1.01)
    output, intermediates = apply_with_intermediates(model, variables, nhwc(images))
    with pytest.raises(AssertionError, match="differs by"):
        assert_matches(dict(intermediates, predicted_depth=output.predicted_depth), expected)


def test_jit_vmap_and_grad(checkpoints):
    _, folder = checkpoints[("nyu-kitti", 50.0)]
    model, variables = from_pretrained(folder)
    images = nhwc(reference.test_images(2, 128, 160, seed=5))
    eager = model.apply(variables, images)
    jitted = jax.jit(model.apply)(variables, images)
    assert relative_error(jitted.predicted_depth, eager.predicted_depth) <= FP32_RELATIVE
    # vmap over a leading axis of single-image batches: the same as the batch of two. (Transformations are
    # jitted: run op by op, vmap and grad of the whole model take minutes and test nothing more.)
    mapped = jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))(variables, images[:, None])
    assert relative_error(mapped.predicted_depth[:, 0], eager.predicted_depth) <= FP32_RELATIVE

    def loss(params):
        return jnp.mean(model.apply({"params": params}, images).predicted_depth)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    norms = {
        "/".join(str(k.key) for k in path): float(jnp.linalg.norm(g))
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
    }
    assert all(np.isfinite(list(norms.values())))
    # Gradients reach the first backbone layer and the chosen head (KITTI, steered).
    assert norms["backbone/embeddings/patch_embeddings/projection/kernel"] > 0
    assert norms["metric_head/conditional_log_binomial_kitti/mlp_0/kernel"] > 0
