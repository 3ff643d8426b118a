"""Depth for images: `images` (any input as RGB), `processor` (transformers' ZoeDepth image processor, and what the
processors share), `depth_anything_processor` (transformers' DPT processor as Depth Anything configures it),
`estimator` (`DepthEstimator`: batching, devices, flip averaging), `folders` (the jobs of `zoedepth-jax predict`),
`depth_images` (depth maps as 16-bit and colour PNGs) and `export` (the forward pass as a `jax.export` artifact)."""
