"""3D output from a metric depth map: points in the camera frame, a grid mesh, and the files that hold them.

- `camera.py`: pinhole intrinsics (fx, fy, cx, cy): the default 55 degree camera of the original ZoeDepth,
  rescaling to another map size, and parsing "FX,FY,CX,CY" from the command line.
- `points.py` (JAX): back-projection of depth to 3D points, the OpenGL and PyTorch3D frames, the depth-edge
  mask, and the grid triangulation (numpy: its length depends on the data).
- `files.py`: a binary PLY point cloud and a GLB mesh with per-vertex colours, written with trimesh (the `3d`
  extra), atomically and without overwriting unless asked.
"""
