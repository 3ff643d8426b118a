"""Point clouds and meshes on disk, written with trimesh (the optional `3d` extra).

The coordinates are written as given, in whichever frame the caller chose (`points.py`): `to_opengl(points)` suits
glTF (y up, and a viewer's camera looks along -z, so a GLB shows the scene as the camera saw it);
`to_pytorch3d(points)` gives what the original ZoeDepth demo wrote. Every frame there has z = +-depth, so the
checks below that need depth use |z|.

Each file is written through a temporary file and a rename (`zoedepth_jax.files.write_atomically`) and an existing
one is kept unless `overwrite=True`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoedepth_jax.errors import ArgumentError, ZoeDepthError
from zoedepth_jax.files import refuse_to_overwrite, write_atomically
from zoedepth_jax.geometry.points import depth_edges_mask, grid_triangles


def _import_trimesh():
    try:
        import trimesh
    except ImportError as error:
        raise ZoeDepthError(f"writing 3D files needs trimesh ({error}): pip install 'zoedepth-jax[3d]'") from error
    return trimesh


def _checked_inputs(points, colors, keep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """points float32 [H, W, 3], colors uint8 [H, W, 3] and the pixels to write, bool [H, W]: those in `keep`
    (all when None) whose three coordinates are finite and whose depth |z| is not zero."""
    points, colors = np.asarray(points), np.asarray(colors)
    if points.ndim != 3 or points.shape[-1] != 3 or not np.issubdtype(points.dtype, np.floating):
        raise ArgumentError(f"points are {points.dtype} {points.shape}: expected floats [H, W, 3]")
    if colors.shape != points.shape or colors.dtype != np.uint8:
        expected = points.shape[:2] + (3,)
        raise ArgumentError(
            f"colors are {colors.dtype} {colors.shape}: expected uint8 RGB of the points' size {expected}"
        )
    valid = np.isfinite(points).all(axis=-1) & (points[..., 2] != 0)  # [H, W]
    if keep is not None:
        keep = np.asarray(keep)
        if keep.shape != points.shape[:2] or keep.dtype != np.bool_:
            raise ArgumentError(
                f"keep is {keep.dtype} {keep.shape}: expected bool of the points' size {points.shape[:2]}"
            )
        valid &= keep
    return points.astype(np.float32), colors, valid


def write_point_cloud(path, points, colors, keep=None, overwrite: bool = False) -> Path:
    """Writes the kept pixels' points as a binary little-endian PLY: xyz float32 and the image's colour as uchar
    red, green, blue (and alpha 255, which trimesh always adds).

    points [H, W, 3], colors uint8 [H, W, 3], keep bool [H, W] or None (every pixel). Pixels with a non-finite
    coordinate or zero depth are left out as well. Returns the path written.
    """
    trimesh = _import_trimesh()
    path = Path(path)
    points, colors, valid = _checked_inputs(points, colors, keep)
    refuse_to_overwrite([path], overwrite)
    cloud = trimesh.PointCloud(points[valid], colors=colors[valid])  # [N, 3] float32, [N, 3] uint8
    write_atomically(path, lambda temp: cloud.export(temp, file_type="ply", encoding="binary"))
    return path


def write_mesh(path, points, colors, keep=None, overwrite: bool = False) -> Path:
    """Writes the pixel grid as a GLB mesh: two triangles per cell (`grid_triangles`), per-vertex colours.

    points [H, W, 3], colors uint8 [H, W, 3]. A triangle is dropped when one of its vertices is not kept: by
    default (keep=None) the pixels on occlusion edges (`depth_edges_mask` of the depth |z|), as the original
    ZoeDepth demo does, so that foreground and background are not joined; always the pixels with a non-finite
    coordinate or zero depth (glTF allows only finite positions).

    Vertices that no triangle uses are removed (the rest keep their row-major order): a mesh viewer would not show
    them, and removing them is what keeps the non-finite ones out of the file. Returns the path written.
    """
    trimesh = _import_trimesh()
    path = Path(path)
    if keep is None:
        points_array = np.asarray(points)
        if points_array.ndim == 3 and points_array.shape[-1] == 3:
            keep = ~np.asarray(depth_edges_mask(np.abs(points_array[..., 2])))
    points, colors, valid = _checked_inputs(points, colors, keep)
    refuse_to_overwrite([path], overwrite)
    height, width = valid.shape
    triangles = grid_triangles(height, width, valid)  # [F, 3] indices into the H * W grid
    used = np.zeros(height * width, dtype=bool)
    used[triangles.reshape(-1)] = True
    new_index = np.cumsum(used, dtype=np.int64) - 1  # [H * W] position of each used vertex among the used ones
    mesh = trimesh.Trimesh(
        vertices=points.reshape(-1, 3)[used],  # [N, 3]
        faces=new_index[triangles],  # [F, 3]
        vertex_colors=colors.reshape(-1, 3)[used],  # [N, 3]
        process=False,  # keep vertices and faces as they are: no merging or reordering
    )
    write_atomically(path, lambda temp: mesh.export(temp, file_type="glb"))
    return path
