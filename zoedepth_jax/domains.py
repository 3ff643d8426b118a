"""ZoeDepth's two depth domains: indoor (NYU Depth v2) and outdoor (KITTI).

`DOMAINS` is in the router's order: ZoeD-NK's domain logits are [nyu, kitti], and a domain's training label is its
index. The depth ranges are the original's dataset settings (zoedepth/utils/config.py `DATASETS_CONFIG`); the NK
model's two heads, the evaluation presets and the training labels all read them from here.
"""

DOMAINS = ("nyu", "kitti")
DOMAIN_LABELS = {name: index for index, name in enumerate(DOMAINS)}
DEPTH_RANGES = {"nyu": (1e-3, 10.0), "kitti": (1e-3, 80.0)}  # (min, max) in meters
