"""From a metric depth map to 3D points and a grid mesh.

Frames (all right-handed, meters, the camera at the origin):

- camera (what `depth_to_points` returns): x right, y down, z forward (z = depth), as pixel coordinates run.
- OpenGL / glTF (`to_opengl`): x right, y up, z backward: the camera frame turned half a turn about its x axis,
  (x, y, z) -> (x, -y, -z). A glTF viewer's camera looks along -z, so the scene shows as the camera saw it.
- PyTorch3D (`to_pytorch3d`): x left, y up, z forward: the camera frame turned half a turn about its z axis,
  (x, y, z) -> (-x, -y, z), the matrix M = diag(-1, -1, 1) of the original ZoeDepth.

Both conversions are rotations (determinant +1), so a mesh keeps its handedness and the way its triangles face.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from zoedepth_jax.errors import ArgumentError

# Depth difference per pixel (meters) above which a pixel lies on an occlusion edge: the original ZoeDepth's
# image-to-3D demo (`ui/gradio_im_to_3d.py`) drops the triangles touching such pixels, so that a foreground
# object is not joined to the background by a sheet of stretched triangles.
EDGE_THRESHOLD = 0.05

OPENGL_FROM_CAMERA = (1.0, -1.0, -1.0)  # diagonal of the half turn about x
PYTORCH3D_FROM_CAMERA = (-1.0, -1.0, 1.0)  # diagonal of the half turn about z: the original's M


def _as_float_map(depth, name: str = "depth") -> jnp.ndarray:
    depth = jnp.asarray(depth)
    if depth.ndim < 2:
        raise ArgumentError(f"{name} has shape {depth.shape}: expected [..., H, W]")
    if not jnp.issubdtype(depth.dtype, jnp.floating):
        depth = depth.astype(jnp.float32)
    return depth


def _as_float_points(points) -> jnp.ndarray:
    points = jnp.asarray(points)
    if points.ndim < 1 or points.shape[-1] != 3:
        raise ArgumentError(f"points have shape {points.shape}: expected [..., 3]")
    if not jnp.issubdtype(points.dtype, jnp.floating):
        points = points.astype(jnp.float32)
    return points


def _split_intrinsics(intrinsics) -> tuple:
    """(fx, fy, cx, cy): an array's last axis holds the four (so a [B, 4] array gives each image its own camera),
    any other sequence is four entries, each a number or an array over the leading dims."""
    if hasattr(intrinsics, "ndim") and intrinsics.ndim >= 1:
        if intrinsics.shape[-1] != 4:
            raise ArgumentError(f"intrinsics array has shape {intrinsics.shape}: expected [..., 4] (fx, fy, cx, cy)")
        return tuple(intrinsics[..., i] for i in range(4))
    if not isinstance(intrinsics, Sequence) or len(intrinsics) != 4:
        raise ArgumentError(f"intrinsics = {intrinsics!r}: expected (fx, fy, cx, cy)")
    return tuple(intrinsics)


def depth_to_points(depth, intrinsics) -> jnp.ndarray:
    """Back-projects every pixel of `depth` [..., H, W] (meters along the optical axis) to its 3D point
    [..., H, W, 3] in the camera frame (x right, y down, z forward):

        X = (u - cx) / fx * Z,  Y = (v - cy) / fy * Z,  Z = depth[v, u]

    at the integer pixel coordinates u = 0..W-1, v = 0..H-1. `intrinsics` is (fx, fy, cx, cy) in pixels of this
    map (see `camera.py`), each a number or an array broadcastable to the leading dims `...`, or one array
    [..., 4]. Pure and elementwise: valid under jit, vmap and grad.
    """
    depth = _as_float_map(depth)  # [..., H, W]
    fx, fy, cx, cy = (jnp.asarray(value, depth.dtype)[..., None, None] for value in _split_intrinsics(intrinsics))
    height, width = depth.shape[-2:]
    u = jnp.arange(width, dtype=depth.dtype)  # [W]
    v = jnp.arange(height, dtype=depth.dtype)[:, None]  # [H, 1]
    x = (u - cx) / fx * depth  # [..., H, W]
    y = (v - cy) / fy * depth  # [..., H, W]
    return jnp.stack([x, y, depth], axis=-1)  # [..., H, W, 3]


def to_opengl(points) -> jnp.ndarray:
    """Camera-frame points [..., 3] (x right, y down, z forward) -> OpenGL / glTF frame (x right, y up, z back)."""
    points = _as_float_points(points)  # [..., 3]
    return points * jnp.asarray(OPENGL_FROM_CAMERA, points.dtype)


def to_pytorch3d(points) -> jnp.ndarray:
    """Camera-frame points [..., 3] (x right, y down, z forward) -> PyTorch3D frame (x left, y up, z forward),
    which is what the original ZoeDepth's `depth_to_points` returns."""
    points = _as_float_points(points)  # [..., 3]
    return points * jnp.asarray(PYTORCH3D_FROM_CAMERA, points.dtype)


def _gradient_along(values: jnp.ndarray, axis: int) -> jnp.ndarray:
    """numpy's `np.gradient` along one axis, unit spacing, edge_order=1: central differences (f[i+1] - f[i-1]) / 2
    inside, one-sided differences f[1] - f[0] and f[n-1] - f[n-2] at the two ends."""
    size = values.shape[axis]
    if size < 2:
        raise ArgumentError(f"depth has shape {values.shape}: a gradient needs at least 2 pixels along each side")

    def part(start: int, stop: int) -> jnp.ndarray:
        return jnp.take(values, jnp.arange(start, stop), axis=axis)

    first = part(1, 2) - part(0, 1)
    last = part(size - 1, size) - part(size - 2, size - 1)
    inside = (part(2, size) - part(0, size - 2)) / 2
    return jnp.concatenate([first, inside, last], axis=axis)


def depth_edges_mask(depth, threshold: float = EDGE_THRESHOLD) -> jnp.ndarray:
    """True where the depth gradient's magnitude (meters per pixel, numpy's `np.gradient` along both axes)
    exceeds `threshold`: the pixels on occlusion edges, as the original ZoeDepth demo finds them.

    depth [..., H, W] (H, W >= 2) -> bool [..., H, W]. Non-finite depth gives a non-finite gradient, which
    compares False: such pixels are not edges here, and are left to the caller's own validity mask.
    """
    depth = _as_float_map(depth)
    gradient_y = _gradient_along(depth, -2)  # [..., H, W]
    gradient_x = _gradient_along(depth, -1)  # [..., H, W]
    return jnp.sqrt(gradient_y**2 + gradient_x**2) > threshold


def grid_triangles(height: int, width: int, keep=None) -> np.ndarray:
    """Triangles [F, 3] int32 over the pixel grid of a `height` x `width` map, vertices indexed row-major
    (v * width + u): two per cell, in the original ZoeDepth's order (cells row by row, and in each cell
    (top-left, bottom-left, top-right) then (bottom-right, top-right, bottom-left)).

    In the camera frame and the two frames above, each triangle's front (counter-clockwise side) faces the camera.
    With `keep` (bool [height, width]) a triangle is dropped when any of its three vertices is not kept, so
    F <= 2 * (height - 1) * (width - 1). numpy, not jitted: F depends on the data.
    """
    if keep is not None:
        keep = np.asarray(keep)
        if keep.shape != (height, width) or keep.dtype != np.bool_:
            raise ArgumentError(f"keep is {keep.dtype} {keep.shape}: expected bool of shape ({height}, {width})")
    if height < 1 or width < 1:
        raise ArgumentError(f"grid of {height} x {width}: expected positive sizes")
    top = np.arange(height - 1)[:, None] * width  # [H-1, 1] index of each cell's top row
    left = np.arange(width - 1)[None, :]  # [1, W-1]
    top_left = top + left  # [H-1, W-1]
    top_right, bottom_left, bottom_right = top_left + 1, top_left + width, top_left + width + 1
    corners = [top_left, bottom_left, top_right, bottom_right, top_right, bottom_left]
    triangles = np.stack(corners, axis=-1).reshape(-1, 3).astype(np.int32)  # [2 (H-1)(W-1), 3]
    if keep is not None:
        triangles = triangles[keep.reshape(-1)[triangles].all(axis=1)]
    return triangles
