"""CosyPose (multi-view multi-object 6D pose estimation) as a reproducible notebook book: BOP data, pybullet rendering, matching and object-level bundle adjustment in torch.

Modules:

- `cosypose_nb.core`: The few things every other chapter leans on: one device helper, one error type for bad input, settings objects, atomic file writes, and safe loading of files a user hands us.
- `cosypose_nb.datasets.bop`: Write a BOP scene folder image by image, read a BOP split as a dataset of images with their annotations, and make a tiny BOP dataset for tests; `cosypose_nb.datasets.bop` also gathers every name of the BOP chapters.
- `cosypose_nb.datasets.bop_format`: The JSON files of a BOP dataset (models_info, scene_camera, scene_gt, scene_gt_info): millimetres in the files, metres in the library, converted here and nowhere else.
- `cosypose_nb.datasets.config`: Where the object sets are cached, which mesh files and units a folder may hold, and how many surface points and symmetry steps an object gets by default: the settings the object models and the `objects` command share, in a module that imports neither torch nor trimesh.
- `cosypose_nb.datasets.download`: The addresses of the core BOP datasets and a resumable downloader that unpacks them into a data folder: HTTP range requests, size and zip checks, extraction into a temporary folder then rename.
- `cosypose_nb.datasets.files`: The binary files of a BOP dataset: RGB images, 16-bit depth maps, masks, and the object models as PLY meshes in millimetres; with the boxes and visibility of an instance computed from its masks.
- `cosypose_nb.datasets.meshes`: What the library computes from one object mesh (metres): its BOP diameter, points sampled on its surface, distances to its surface (to check symmetries on shape and colour), its colours, and the URDF that pybullet loads.
- `cosypose_nb.datasets.models`: The object set of the pipeline: one `ObjectModel` per label (mesh, diameter, surface points, symmetries, URDF) in a `MeshDatabase` built from a BOP models folder, a folder of meshes or bare point clouds, with the batched tensors every stage asks for.
- `cosypose_nb.datasets.objects`: Ten objects made from the meshes pybullet ships (no download needed), built once into a cached BOP models folder; and one import path for everything about objects.
- `cosypose_nb.datasets.objects_command`: `cosypose-nb objects (default | PATH) [--out DIR]`: list an object set and write it as a BOP models folder; its options come from the object sets' settings, and torch and trimesh load only when it runs.
- `cosypose_nb.datasets.results`: What a method hands in and what it is evaluated on: the BOP results CSV (one estimate per row) and the test targets `test_targets_bop19.json`.
- `cosypose_nb.evaluation.config`: The BOP19 scores' thresholds (`BOP19Config`) and the settings of `evaluate` (`EvaluateConfig`): frozen config objects that check themselves, serialise to JSON and make the `evaluate` command's options, in a module that imports neither torch nor pandas.
- `cosypose_nb.evaluation.evaluate_command`: `cosypose-nb evaluate RESULTS.csv --dataset BOP_DIR --out DIR`: evaluate a BOP results file; its options are the fields of `EvaluateConfig`, and torch, pandas and the renderer load only when it runs.
- `cosypose_nb.geometry.cameras`: Pinhole projection, the intrinsics of a crop-and-resize, DeepIM-style crops around the projection of an object at a pose, and boxes from projected points or masks. Batched torch, any device.
- `cosypose_nb.geometry.symmetries`: Object symmetries in the BOP convention, discretised into finite sets of transforms, and the symmetric pose distances that the loss, the matching and the bundle adjustment all use.
- `cosypose_nb.rendering.batch`: A pool of pybullet worker processes that renders batches of single objects at `(label, T_CO, K)` to tensors on any device: what render-and-compare calls at every refiner iteration.
- `cosypose_nb.rendering.bullet`: One pybullet world holding an object set: pybullet's OpenGL matrices from our `T_CO` and `K`, exact to the pixel, and objects shown, hidden, coloured and rendered without ever being reloaded.
- `cosypose_nb.rendering.scene`: Many objects seen by one camera, over a ground plane or inside a textured room, with depth, visible masks and full silhouettes: the recorder's images; and one object alone, for figures.
- `cosypose_nb.singleview.backbones`: The feature extractors of the coarse and refiner networks: the original's EfficientNet-B3 (static "same" padding, its checkpoints loadable), ResNet-18/34 and small networks for a CPU.
- `cosypose_nb.singleview.inference`: From images and 2D detections to pose candidates: the coarse model from the boxes, the refiner from the coarse estimates (or from poses given by another method), batched over every box of every image, returned as the multi-view stage's `Candidates`.
- `cosypose_nb.singleview.loss`: CosyPose's training loss of the coarse and refiner networks: an L1 point-matching distance, minimised over the object's symmetries, split into a rotation, an image-plane and a depth term.
- `cosypose_nb.singleview.pose_model`: CosyPose's coarse and refiner networks: crop the image around the current estimate, render the object there, compare the two with a CNN and read a pose update in the camera frame and in image space.
- `cosypose_nb.synthetic.config`: What a synthetic scene looks like (`SceneConfig`) and what a recording writes, where and how (`RecordingConfig`): frozen config objects that check themselves, serialise to JSON and make the `record` command's options, in a module that imports neither torch nor pybullet.
- `cosypose_nb.synthetic.record_command`: `cosypose-nb record --out DIR [options]`: record a domain-randomised synthetic BOP dataset; its options are the fields of `RecordingConfig`, and torch, pybullet and dask load only when it runs.
- `cosypose_nb.synthetic.recording`: Synthetic scenes rendered and written as BOP datasets: chunked, resumable, deterministic, scaled out with dask.
- `cosypose_nb.synthetic.scenes`: Everything random about a domain-randomised scene, drawn from the scene's own seed: objects dropped on a plane or floating, cameras, lights, textures and intrinsics."""

__version__ = "0.0.1"
