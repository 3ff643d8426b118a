"""What transformers' own integration tests assert for the released checkpoints, quoted with their source.

Source: huggingface/transformers at commit db4bdae84252529246d862f738dcc64adb66fe05,
`tests/models/zoedepth/test_modeling_zoedepth.py`, class `ZoeDepthModelIntegrationTest`. Its images are two COCO
val2017 photos stored as PNG files in that repository, `tests/fixtures/tests_samples/COCO/000000039769.png` (two
cats on a pink blanket, 640x480) and `.../000000004016.png`, processed by
`ZoeDepthImageProcessor.from_pretrained(<model id>)`:

* `test_inference_depth_estimation` (Intel/zoedepth-nyu) and `test_inference_depth_estimation_multiple_heads`
  (Intel/zoedepth-nyu-kitti), on 000000039769 alone: the model's `predicted_depth` has shape (1, 384, 512), and
  its top-left 3x3 corner `predicted_depth[0, :3, :3]` equals the values below within
  `torch.testing.assert_close(rtol=1e-4, atol=1e-4)`.
* `check_post_processing_test` (Intel/zoedepth-nyu-kitti, the processor with `keep_aspect_ratio=False`, the two
  photos as one batch, the model's one-head-per-batch routing; with flip, the mirrored pixel values as a second
  batch): the top-left 3x3 corner of each post-processed depth map, at the photo's size, for each (pad, flip)
  setting, within rtol=1e-3, atol=1e-3.

Intel/zoedepth-kitti has no asserted values there.
"""

from __future__ import annotations

import dataclasses

TRANSFORMERS_COMMIT = "db4bdae84252529246d862f738dcc64adb66fe05"
TEST_FILE = "tests/models/zoedepth/test_modeling_zoedepth.py"
CATS, SECOND_PHOTO = "000000039769.png", "000000004016.png"  # the test's fixture files, by name
FIXTURE_FOLDER = "tests/fixtures/tests_samples/COCO"
FIXTURE_URL = f"https://raw.githubusercontent.com/huggingface/transformers/{TRANSFORMERS_COMMIT}/{FIXTURE_FOLDER}/{{}}"

Corner = tuple[tuple[float, float, float], ...]  # the top-left 3x3 of a depth map, meters


@dataclasses.dataclass(frozen=True)
class Expected:
    """One assertion of transformers' integration tests: the `corners` of the depth maps of `images` (one batch)."""

    test: str
    model: str
    images: tuple[str, ...]
    corners: tuple[Corner, ...]
    rtol: float
    atol: float
    raw_shape: tuple[int, int] | None = None  # the model output's (height, width), when the test asserts it
    pad: bool | None = None  # post-processing settings; None: the raw model output is compared
    flip: bool | None = None

    @property
    def post_processed(self) -> bool:
        return self.pad is not None


RAW_OUTPUTS = (
    Expected(
        "test_inference_depth_estimation",
        "Intel/zoedepth-nyu",
        (CATS,),
        (((1.0020, 1.0219, 1.0389), (1.0349, 1.0816, 1.1000), (1.0576, 1.1094, 1.1249)),),
        rtol=1e-4,
        atol=1e-4,
        raw_shape=(384, 512),
    ),
    Expected(
        "test_inference_depth_estimation_multiple_heads",
        "Intel/zoedepth-nyu-kitti",
        (CATS,),
        (((1.1571, 1.1438, 1.1783), (1.2163, 1.2036, 1.2320), (1.2688, 1.2461, 1.2734)),),
        rtol=1e-4,
        atol=1e-4,
        raw_shape=(384, 512),
    ),
)

_POST_PROCESSED_CORNERS = {  # (pad, flip): (corner of 000000039769, corner of 000000004016)
    (False, False): (
        ((1.1348238, 1.1193453, 1.130562), (1.1754476, 1.1613507, 1.1701596), (1.2287744, 1.2101802, 1.2148322)),
        ((2.7170, 2.6550, 2.6839), (2.9827, 2.9438, 2.9587), (3.2340, 3.1817, 3.1602)),
    ),
    (False, True): (
        ((1.0610938, 1.1042216, 1.1429265), (1.1099341, 1.148696, 1.1817775), (1.1656011, 1.1988826, 1.2268101)),
        ((2.5848, 2.7391, 2.8694), (2.7882, 2.9872, 3.1244), (2.9436, 3.1812, 3.3188)),
    ),
    (True, False): (
        ((1.8382794, 1.8380532, 1.8375976), (1.848761, 1.8485023, 1.8479986), (1.8571457, 1.8568444, 1.8562847)),
        ((6.2030, 6.1902, 6.1777), (6.2303, 6.2176, 6.2053), (6.2561, 6.2436, 6.2312)),
    ),
    (True, True): (
        ((1.8306141, 1.8305621, 1.8303483), (1.8410318, 1.8409299, 1.8406585), (1.8492792, 1.8491366, 1.8488203)),
        ((6.2616, 6.2520, 6.2435), (6.2845, 6.2751, 6.2667), (6.3065, 6.2972, 6.2887)),
    ),
}

POST_PROCESSED = tuple(
    Expected(
        f"check_post_processing_test(pad={pad}, flip={flip})",
        "Intel/zoedepth-nyu-kitti",
        (CATS, SECOND_PHOTO),
        corners,
        rtol=1e-3,
        atol=1e-3,
        pad=pad,
        flip=flip,
    )
    for (pad, flip), corners in _POST_PROCESSED_CORNERS.items()
)


def expectations_for(model: str) -> tuple[Expected, ...]:
    """The asserted values that apply to `model`, a hub id (a local folder has none: its weights are unknown)."""
    return tuple(e for e in RAW_OUTPUTS + POST_PROCESSED if e.model == model)
