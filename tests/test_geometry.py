"""zoedepth_jax.geometry: camera intrinsics, depth to points, edge mask, grid mesh, PLY and GLB files.

The original ZoeDepth (`zoedepth/utils/geometry.py` and `ui/gradio_im_to_3d.py`) is the reference: its camera,
its PyTorch3D frame, its triangle order and its numpy edge mask are restated here in numpy and compared against.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh
from tolerances import GEOMETRY_FLOAT64_RELATIVE, GEOMETRY_FP32_RELATIVE

from zoedepth_jax.errors import ArgumentError, OutputExistsError, ZoeDepthError
from zoedepth_jax.geometry.camera import (
    DEFAULT_FOV_DEGREES,
    intrinsics_from_fov,
    parse_intrinsics,
    scale_intrinsics,
)
from zoedepth_jax.geometry.files import write_mesh, write_point_cloud
from zoedepth_jax.geometry.points import (
    EDGE_THRESHOLD,
    depth_edges_mask,
    depth_to_points,
    grid_triangles,
    to_opengl,
    to_pytorch3d,
)

FX, FY, CX, CY = 100.0, 120.0, 32.0, 24.0  # fx != fy and cx != cy, so that a swap shows
HEIGHT, WIDTH = 48, 64


def original_points(depth, intrinsics):
    """The original's back-projection, restated: M @ (depth * K^-1 @ [u, v, 1]), M = diag(-1, -1, 1).
    depth [H, W] -> float64 [H, W, 3] in PyTorch3D's frame."""
    fx, fy, cx, cy = intrinsics
    camera_matrix = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    homogeneous = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)  # [H, W, 3]
    rays = homogeneous @ np.linalg.inv(camera_matrix).T  # [H, W, 3]
    return (depth[..., None] * rays) @ np.diag([-1.0, -1.0, 1.0]).T


def step_depth(height=6, width=8, near=2.0, far=3.0):
    """A wall at `near` meters on the left half and one at `far` on the right: an occlusion edge between."""
    depth = np.full((height, width), near, np.float32)
    depth[:, width // 2 :] = far
    return depth


def image_colors(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# Camera


def test_default_intrinsics_are_the_originals_at_a_non_square_size():
    fx, fy, cx, cy = intrinsics_from_fov(HEIGHT, WIDTH)
    focal = 0.5 * WIDTH / np.tan(0.5 * 55 * np.pi / 180.0)  # from the width, whatever the height
    np.testing.assert_allclose([fx, fy, cx, cy], [focal, focal, WIDTH / 2, HEIGHT / 2], rtol=GEOMETRY_FLOAT64_RELATIVE)
    assert DEFAULT_FOV_DEGREES == 55.0
    wide = intrinsics_from_fov(HEIGHT, WIDTH, fov_degrees=90.0)
    np.testing.assert_allclose(wide[0], WIDTH / 2, rtol=GEOMETRY_FLOAT64_RELATIVE)  # tan(45 degrees) = 1


@pytest.mark.parametrize(
    "height, width, fov", [(0, 64, 55.0), (48, -1, 55.0), (48, 64, 0.0), (48, 64, 180.0), (48, 64, -10.0)]
)
def test_intrinsics_from_fov_rejects_bad_values(height, width, fov):
    with pytest.raises(ArgumentError, match="height, width|fov_degrees"):
        intrinsics_from_fov(height, width, fov)


def test_scale_intrinsics_keeps_the_image_edges_and_round_trips():
    halved = scale_intrinsics((FX, FY, CX, CY), (HEIGHT, WIDTH), (HEIGHT // 2, WIDTH // 3))
    scale_x, scale_y = (WIDTH // 3) / WIDTH, (HEIGHT // 2) / HEIGHT
    # By hand: the focal lengths scale, the principal point moves with the pixel centres (x + 0.5) * s - 0.5.
    expected = (FX * scale_x, FY * scale_y, (CX + 0.5) * scale_x - 0.5, (CY + 0.5) * scale_y - 0.5)
    np.testing.assert_allclose(halved, expected, rtol=GEOMETRY_FLOAT64_RELATIVE)
    back = scale_intrinsics(halved, (HEIGHT // 2, WIDTH // 3), (HEIGHT, WIDTH))
    np.testing.assert_allclose(back, (FX, FY, CX, CY), rtol=GEOMETRY_FLOAT64_RELATIVE)
    # The image's centre in integer pixel coordinates stays the centre.
    centred = ((WIDTH - 1) / 2, (HEIGHT - 1) / 2)
    _, _, cx, cy = scale_intrinsics((FX, FY, *centred), (HEIGHT, WIDTH), (17, 29))
    np.testing.assert_allclose((cx, cy), ((29 - 1) / 2, (17 - 1) / 2), rtol=GEOMETRY_FLOAT64_RELATIVE)
    with pytest.raises(ArgumentError, match="to_size"):
        scale_intrinsics((FX, FY, CX, CY), (HEIGHT, WIDTH), (0, 10))


def test_parse_intrinsics():
    assert parse_intrinsics("100,120,32,24") == (FX, FY, CX, CY)
    assert parse_intrinsics(" 100.5, 120 ,-3,2e1") == (100.5, 120.0, -3.0, 20.0)


@pytest.mark.parametrize("text", ["", "1,2,3", "1,2,3,4,5", "a,b,c,d", "1,2,3,x", "0,1,2,3", "1,-1,2,3", "nan,1,1,1"])
def test_parse_intrinsics_rejects(text):
    with pytest.raises(ArgumentError, match="intrinsics"):
        parse_intrinsics(text)


# Points


def test_known_pixel_position_in_each_frame():
    depth = np.ones((HEIGHT, WIDTH), np.float32)
    depth[10, 30] = 2.0
    points = np.asarray(depth_to_points(depth, (FX, FY, CX, CY)))
    assert points.shape == (HEIGHT, WIDTH, 3) and points.dtype == np.float32
    # u = 30, v = 10 at 2 m: X = (30 - 32) / 100 * 2, Y = (10 - 24) / 120 * 2, Z = 2.
    camera = np.array([-0.04, -14 / 60, 2.0])
    np.testing.assert_allclose(points[10, 30], camera, rtol=GEOMETRY_FP32_RELATIVE)
    np.testing.assert_allclose(
        np.asarray(to_opengl(points))[10, 30], [-0.04, 14 / 60, -2.0], rtol=GEOMETRY_FP32_RELATIVE
    )
    np.testing.assert_allclose(
        np.asarray(to_pytorch3d(points))[10, 30], [0.04, 14 / 60, 2.0], rtol=GEOMETRY_FP32_RELATIVE
    )


def test_points_in_pytorch3d_frame_are_the_originals():
    depth = np.random.default_rng(1).uniform(0.5, 10.0, (HEIGHT, WIDTH)).astype(np.float32)
    intrinsics = intrinsics_from_fov(HEIGHT, WIDTH)
    ours = np.asarray(to_pytorch3d(depth_to_points(depth, intrinsics)))
    reference = original_points(depth.astype(np.float64), intrinsics)
    scale = np.abs(reference).max(axis=-1, keepdims=True)  # per point, so small coordinates count too
    assert (np.abs(ours - reference) / scale).max() <= GEOMETRY_FP32_RELATIVE


def test_depth_to_points_under_jit_and_vmap_with_a_camera_per_image():
    depths = np.random.default_rng(2).uniform(1.0, 5.0, (2, 6, 7)).astype(np.float32)
    cameras = np.array([[FX, FY, CX, CY], [60.0, 50.0, 3.0, 2.5]], np.float32)  # [2, 4]
    one_by_one = np.stack([np.asarray(depth_to_points(d, tuple(k))) for d, k in zip(depths, cameras, strict=True)])
    batched = jax.jit(jax.vmap(depth_to_points))(depths, cameras)
    np.testing.assert_allclose(batched, one_by_one, rtol=GEOMETRY_FP32_RELATIVE)
    as_columns = jax.jit(depth_to_points)(depths, tuple(jnp.asarray(cameras[:, i]) for i in range(4)))  # 4 x [2]
    np.testing.assert_allclose(as_columns, one_by_one, rtol=GEOMETRY_FP32_RELATIVE)
    np.testing.assert_allclose(depth_to_points(depths, cameras), one_by_one, rtol=GEOMETRY_FP32_RELATIVE)


def test_depth_to_points_gradient():
    depth = jnp.full((HEIGHT, WIDTH), 2.0)
    u, v = 30, 10
    d_x = jax.grad(lambda d: depth_to_points(d, (FX, FY, CX, CY))[v, u, 0])(depth)
    d_y = jax.grad(lambda d: depth_to_points(d, (FX, FY, CX, CY))[v, u, 1])(depth)
    expected_x, expected_y = np.zeros((HEIGHT, WIDTH)), np.zeros((HEIGHT, WIDTH))
    expected_x[v, u], expected_y[v, u] = (u - CX) / FX, (v - CY) / FY
    np.testing.assert_allclose(d_x, expected_x, rtol=GEOMETRY_FP32_RELATIVE)
    np.testing.assert_allclose(d_y, expected_y, rtol=GEOMETRY_FP32_RELATIVE)


def test_depth_to_points_rejects_bad_arguments():
    with pytest.raises(ArgumentError, match=r"\[\.\.\., H, W\]"):
        depth_to_points(np.ones(5), (FX, FY, CX, CY))
    with pytest.raises(ArgumentError, match="fx, fy, cx, cy"):
        depth_to_points(np.ones((4, 5)), (FX, FY, CX))
    with pytest.raises(ArgumentError, match=r"\(2, 3\)"):
        depth_to_points(np.ones((2, 4, 5)), np.ones((2, 3)))


# Edges


def edges_by_numpy(depth, threshold=EDGE_THRESHOLD):
    """The original demo's mask: np.gradient along both axes, magnitude above the threshold."""
    along_rows, along_columns = np.gradient(depth)
    return np.sqrt(along_rows**2 + along_columns**2) > threshold


def test_depth_edges_mask_is_numpys_gradient():
    # A step across the columns, and below it a ramp whose slope grows row by row (0.03 * y^2 per pixel): the
    # one-sided differences at the borders and the central ones inside fall on both sides of the threshold.
    depth = np.full((9, 11), 1.0, np.float32)
    depth[:4, 6:] = 1.5
    rows = np.arange(4, 9, dtype=np.float32)[:, None]
    depth[4:] = 1.0 + 0.03 * (rows - 4) ** 2 + 0.01 * np.arange(11, dtype=np.float32)
    ours = np.asarray(depth_edges_mask(depth))
    expected = edges_by_numpy(depth)
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(depth_edges_mask(depth, threshold=0.5), edges_by_numpy(depth, 0.5))


def test_depth_edges_mask_batched_random_maps():
    depths = np.random.default_rng(3).uniform(1.0, 1.15, (3, 5, 2)).astype(np.float32)  # gradients near 0.05
    ours = np.asarray(jax.jit(depth_edges_mask)(depths))
    expected = np.stack([edges_by_numpy(d) for d in depths])
    assert 0 < expected.sum() < expected.size
    np.testing.assert_array_equal(ours, expected)
    with pytest.raises(ArgumentError, match="at least 2"):
        depth_edges_mask(np.ones((1, 5)))


# Triangles


def test_grid_triangles_in_the_originals_order():
    # Vertices of a 2 x 3 grid:  0 1 2
    #                            3 4 5
    expected = [[0, 3, 1], [4, 1, 3], [1, 4, 2], [5, 2, 4]]
    triangles = grid_triangles(2, 3)
    assert triangles.dtype == np.int32
    np.testing.assert_array_equal(triangles, expected)


def test_grid_triangle_counts():
    assert grid_triangles(4, 5).shape == (2 * 3 * 4, 3)
    assert grid_triangles(1, 5).shape == (0, 3)
    keep = np.ones((4, 5), bool)
    keep[0, 0] = False  # a corner: in one triangle
    assert grid_triangles(4, 5, keep).shape == (23, 3)
    keep[2, 2] = False  # inside: in six
    triangles = grid_triangles(4, 5, keep)
    assert triangles.shape == (17, 3)
    assert not np.isin(triangles, [0, 2 * 5 + 2]).any()
    with pytest.raises(ArgumentError, match=r"\(4, 5\)"):
        grid_triangles(4, 5, np.ones((5, 4), bool))


@pytest.mark.parametrize("frame", [lambda p: p, to_opengl, to_pytorch3d])
def test_triangles_face_the_camera(frame):
    depth = np.random.default_rng(4).uniform(2.0, 2.1, (5, 6)).astype(np.float32)
    vertices = np.asarray(frame(depth_to_points(depth, (FX, FY, CX, CY)))).reshape(-1, 3)[grid_triangles(5, 6)]
    normals = np.cross(vertices[:, 1] - vertices[:, 0], vertices[:, 2] - vertices[:, 0])  # counter-clockwise side
    assert (np.einsum("fi,fi->f", normals, vertices[:, 0]) < 0).all()  # towards the camera at the origin


# Files


def read_ply_header(path):
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    return header.decode("ascii").splitlines(), body


def test_point_cloud_is_binary_float32_with_colors(tmp_path):
    depth = step_depth()
    depth[1, 1] = np.nan  # not finite: left out
    depth[2, 2] = 0.0  # no depth: left out
    points = np.asarray(to_opengl(depth_to_points(depth, intrinsics_from_fov(*depth.shape))))
    colors = image_colors(*depth.shape)
    keep = np.ones(depth.shape, bool)
    keep[0, :3] = False
    written = write_point_cloud(tmp_path / "cloud.ply", points, colors, keep=keep)
    assert written == tmp_path / "cloud.ply"
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]  # no temporary file left

    selected = keep & np.isfinite(depth) & (depth > 0)
    count = int(selected.sum())
    assert count == depth.size - 5
    header, body = read_ply_header(written)
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert f"element vertex {count}" in header
    properties = [line.split()[1:] for line in header if line.startswith("property")]
    assert properties[:6] == [["float", "x"], ["float", "y"], ["float", "z"]] + [
        ["uchar", channel] for channel in ("red", "green", "blue")
    ]
    rows = np.frombuffer(body, [("xyz", "<f4", 3), ("rgb", "u1", 3), ("alpha", "u1")], count=count)
    assert len(body) == rows.nbytes  # nothing but the vertices
    np.testing.assert_array_equal(rows["xyz"], points[selected])
    np.testing.assert_array_equal(rows["rgb"], colors[selected])

    cloud = trimesh.load(written, process=False)
    np.testing.assert_array_equal(cloud.vertices, points[selected])
    np.testing.assert_array_equal(np.asarray(cloud.colors)[:, :3], colors[selected])


def load_glb_mesh(path):
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    return mesh


def test_mesh_drops_the_triangles_across_a_depth_step(tmp_path):
    depth = step_depth()  # near on columns 0-3, far on 4-7: columns 3 and 4 are edges
    points = np.asarray(to_opengl(depth_to_points(depth, intrinsics_from_fov(*depth.shape))))
    colors = image_colors(*depth.shape)
    mesh = load_glb_mesh(write_mesh(tmp_path / "mesh.glb", points, colors))

    kept = ~edges_by_numpy(depth)
    assert kept.sum() == 6 * 6
    np.testing.assert_array_equal(mesh.vertices, points[kept])  # float32 positions, row-major order
    np.testing.assert_array_equal(np.asarray(mesh.visual.vertex_colors)[:, :3], colors[kept])
    assert len(mesh.faces) == 2 * 5 * 4  # cells of columns 0-2 and 5-7, none across the step
    face_depths = -mesh.vertices[mesh.faces][..., 2]  # [F, 3]
    assert (face_depths.min(axis=1) == face_depths.max(axis=1)).all()
    normals = mesh.face_normals  # from the winding: towards the camera at the origin
    assert (np.einsum("fi,fi->f", normals, mesh.vertices[mesh.faces[:, 0]]) < 0).all()

    whole = load_glb_mesh(write_mesh(tmp_path / "whole.glb", points, colors, keep=np.ones(depth.shape, bool)))
    assert len(whole.vertices) == depth.size and len(whole.faces) == 2 * 5 * 7
    np.testing.assert_array_equal(whole.faces, grid_triangles(*depth.shape))


def test_mesh_leaves_out_points_without_depth(tmp_path):
    depth = np.full((4, 5), 2.0, np.float32)
    depth[1, 1] = np.inf
    points = np.asarray(depth_to_points(depth, (FX, FY, CX, CY)))
    mesh = load_glb_mesh(write_mesh(tmp_path / "mesh.glb", points, image_colors(4, 5), keep=np.ones((4, 5), bool)))
    assert np.isfinite(mesh.vertices).all()
    assert len(mesh.faces) == 2 * 3 * 4 - 6
    assert len(mesh.vertices) == 4 * 5 - 1


@pytest.mark.parametrize("write", [write_point_cloud, write_mesh])
def test_writers_refuse_to_overwrite(tmp_path, write):
    points = np.asarray(depth_to_points(step_depth(), (FX, FY, CX, CY)))
    path = tmp_path / "out"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite"):
        write(path, points, image_colors(6, 8))
    assert path.read_bytes() == b"keep me"
    write(path, points, image_colors(6, 8), overwrite=True)
    assert path.read_bytes() != b"keep me"


@pytest.mark.parametrize("write", [write_point_cloud, write_mesh])
def test_writers_check_shapes(tmp_path, write):
    points = np.asarray(depth_to_points(step_depth(), (FX, FY, CX, CY)))  # [6, 8, 3]
    colors = image_colors(6, 8)
    with pytest.raises(ArgumentError, match=r"\(6, 8, 4\)"):
        write(tmp_path / "a", points, np.zeros((6, 8, 4), np.uint8))
    with pytest.raises(ArgumentError, match=r"\(5, 8, 3\)"):
        write(tmp_path / "a", points, colors[:5])
    with pytest.raises(ArgumentError, match="float"):
        write(tmp_path / "a", points, colors.astype(np.float32))
    with pytest.raises(ArgumentError, match=r"\(6, 8, 2\)"):
        write(tmp_path / "a", points[..., :2], colors)
    with pytest.raises(ArgumentError, match=r"\(8, 6\)"):
        write(tmp_path / "a", points, colors, keep=np.ones((8, 6), bool))
    assert not list(tmp_path.iterdir())


def test_writers_without_trimesh_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trimesh", None)  # `import trimesh` raises ImportError
    points = np.asarray(depth_to_points(step_depth(), (FX, FY, CX, CY)))
    for write in (write_point_cloud, write_mesh):
        with pytest.raises(ZoeDepthError, match=r"pip install 'zoedepth-jax\[3d\]'"):
            write(tmp_path / "a", points, image_colors(6, 8))
