"""The Flax modules, named as transformers names its modules: backbones `beit` (ZoeDepth's) and `dinov2` (Depth
Anything's), `dpt` (the neck and the depth head both models configure), `metric_bins` and `metric_head` (ZoeDepth's
metric-bins attractor head), `router` (ZoeD-NK's domain classifier), the whole models `zoedepth` and
`depth_anything`, `models` (the model a config describes) and `layers` (shared layers, and the CPU and plain
traced forms)."""
