"""The Flax modules of ZoeDepth, named as transformers names its modules: `beit` (backbone), `dpt` (neck and
relative head), `metric_bins` and `metric_head` (the metric-bins attractor head), `router` (ZoeD-NK's domain
classifier), `zoedepth` (the whole model) and `layers` (shared layers, and the CPU and plain traced forms)."""
