"""`cosypose-nb demo --out DIR` follows the output-folder rule (core.claim_output_dir): its own folder is resumed,
a folder holding a user's file is refused before anything is written, `--overwrite` writes there and keeps the file."""
import pandas as pd

from cosypose_nb.cli import main

SMALL = ["--scenes", "1", "--views", "2", "--resolution", "60x80", "--no-progress"]


def test_demo_resumes_its_folder_and_refuses_others(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    first = pd.read_csv(out / "results.csv")
    capsys.readouterr()
    assert main(["demo", "--out", str(out), *SMALL]) == 0                        # its own folder: resumed
    assert "0 new images (1 scenes already there)" in capsys.readouterr().out
    again = pd.read_csv(out / "results.csv")
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))   # seconds: wall time

    mine = tmp_path / "mine"; mine.mkdir(); (mine / "keep.txt").write_text("a user's file")
    assert main(["demo", "--out", str(mine), *SMALL]) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]                      # refused: nothing written
    assert main(["demo", "--out", str(mine), *SMALL, "--overwrite"]) == 0
    assert (mine / "keep.txt").read_text() == "a user's file" and (mine / "results.csv").exists()
