"""Maps written by nnU-Net itself: `calibrate --maps` and `postprocess` on the output folder of
`nnUNetPredictor.predict_from_files(..., save_probabilities=True)`, which is what
`nnUNetv2_predict --save_probabilities` runs. That folder holds, per case, the segmentation
(`<id>.nii.gz` here), the probabilities (`<id>.npz`, classes first) and `<id>.pkl`, plus nnU-Net's
own `plans.json`, `dataset.json` and `predict_from_raw_data_args.json`: vesukit must pick the
`.npz` and ignore the rest."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("numba")
nnunet_predict = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")
sitk = pytest.importorskip("SimpleITK")

from vesukit.cli import main  # noqa: E402
from vesukit.data import list_ids, list_test_ids, read_volume, read_volume_pillow  # noqa: E402
from vesukit.decide import load_calibration  # noqa: E402
from vesukit.decide.apply import decide  # noqa: E402
from vesukit.maps import maps_from_probability  # noqa: E402
from vesukit.synth import make_competition_root  # noqa: E402

MODEL = (Path(__file__).resolve().parent / "data" / "nnunet" / "Dataset501_VesukitCT"
         / "nnUNetTrainer__nnUNetPlans__3d_fullres")


def nnunet_predict_folder(images: dict[str, np.ndarray], work: Path) -> Path:
    """Each volume as nnU-Net raw input (`<id>_0000.nii.gz`), predicted by nnU-Net into a folder."""
    raw, out = work / "imagesTs", work / "predicted"
    raw.mkdir(parents=True)
    out.mkdir()  # as nnUNetv2_predict makes -o
    for volume_id, volume in images.items():
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(raw / f"{volume_id}_0000.nii.gz"))
    threads = torch.get_num_threads()
    predictor = nnunet_predict.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                               perform_everything_on_device=False, device=torch.device("cpu"),
                                               verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(MODEL), use_folds=["all"],
                                                   checkpoint_name="checkpoint_final.pth")
    try:
        predictor.predict_from_files_sequential(str(raw), str(out), save_probabilities=True)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def nnunet_maps(tmp_path_factory):
    """A root with 6 labelled train volumes and 2 test volumes, and nnU-Net's output folder for all 8."""
    folder = tmp_path_factory.mktemp("nnunet-maps")
    root = make_competition_root(folder / "root", n_test=2, n_train=6, shapes=[(24, 28, 26)], seed=3)
    images = {i: read_volume(root / "train_images" / f"{i}.tif") for i in list_ids(root, "train")}
    images |= {i: read_volume(root / "test_images" / f"{i}.tif") for i in list_test_ids(root)}
    return root, nnunet_predict_folder(images, folder)


def test_nnunet_writes_its_own_layout(nnunet_maps):
    root, maps = nnunet_maps
    some_id = list_test_ids(root)[0]
    assert {f"{some_id}.npz", f"{some_id}.pkl", f"{some_id}.nii.gz", "plans.json", "dataset.json"} <= {
        p.name for p in maps.iterdir()}
    with np.load(maps / f"{some_id}.npz") as saved:
        assert saved["probabilities"].shape == (2, 24, 28, 26)  # background, surface (ignore is not a class)


def test_calibrate_and_postprocess_read_nnunet_output(nnunet_maps, tmp_path, capsys):
    root, maps = nnunet_maps
    calibration = tmp_path / "calibration.json"
    code = main(["calibrate", "--maps", str(maps), "--data", str(root), "--out", str(calibration),
                 "--folds", "3", "--steps", "basic", "--top-k", "1", "--rules", "fixed"])
    assert code == 0, capsys.readouterr()
    oof = json.loads(calibration.read_text())["evidence"]["out_of_fold"]
    assert sorted(oof["oof_winner_scores"]) == sorted(list_ids(root, "train"))  # every labelled volume, from its .npz

    out = tmp_path / "submission.zip"
    assert main(["postprocess", str(maps), "--calibration", str(calibration), "--data", str(root),
                 "--out", str(out)]) == 0, capsys.readouterr()
    fitted = load_calibration(calibration)
    with zipfile.ZipFile(out) as archive:
        for volume_id in list_test_ids(root):
            with np.load(maps / f"{volume_id}.npz") as saved:
                surface = saved["probabilities"][1]  # class 1 is the surface
            expected = decide(maps_from_probability(surface.astype(np.float32)), fitted)[0]
            written = read_volume_pillow(io.BytesIO(archive.read(f"{volume_id}.tif")))
            np.testing.assert_array_equal(written, expected)
