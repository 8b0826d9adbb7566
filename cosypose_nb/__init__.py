"""CosyPose (multi-view multi-object 6D pose estimation) as a reproducible notebook book: BOP data, pybullet rendering, matching and object-level bundle adjustment in torch.

Modules:

- `cosypose_nb.bop`: Read and write BOP datasets (object models, scene folders, test targets, results CSV): millimetres in the files, metres in the library, converted here and nowhere else.
- `cosypose_nb.cameras`: Pinhole projection, the intrinsics of a crop-and-resize, DeepIM-style crops around the projection of an object at a pose, and boxes from projected points or masks. Batched torch, any device.
- `cosypose_nb.core`: The few things every other chapter leans on: one device helper, one error type for bad input, atomic file writes, and safe loading of files a user hands us.
- `cosypose_nb.lib3d`: The geometry core: 4x4 rigid transforms, their composition and inverse, and the rotation representations the networks and the samplers use. Batched torch, any device, float32 or float64.
- `cosypose_nb.symmetries`: Object symmetries in the BOP convention, discretised into finite sets of transforms, and the symmetric pose distances that the loss, the matching and the bundle adjustment all use."""

__version__ = "0.0.1"
