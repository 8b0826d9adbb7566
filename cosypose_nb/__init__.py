"""CosyPose (multi-view multi-object 6D pose estimation) as a reproducible notebook book: BOP data, pybullet rendering, matching and object-level bundle adjustment in torch.

Modules:

- `cosypose_nb.core`: The few things every other chapter leans on: one device helper, one error type for bad input, atomic file writes, and safe loading of files a user hands us.
- `cosypose_nb.lib3d`: The geometry core: 4x4 rigid transforms, their composition and inverse, and the rotation representations the networks and the samplers use. Batched torch, any device, float32 or float64.
- `cosypose_nb.symmetries`: Object symmetries in the BOP convention, discretised into finite sets of transforms, and the symmetric pose distances that the loss, the matching and the bundle adjustment all use."""

__version__ = "0.0.1"
