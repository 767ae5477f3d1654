"""Open Images preparation on synthetic images and CSVs written into tmp_path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_resnet.errors import ConfigError
from lightning_resnet.tasks.prepare.openimages import (
    DEFAULT_GROUPS,
    main,
    prepare_openimages,
    read_class_descriptions,
    resolve_groups,
)

BLUE, RED = (0, 0, 255), (255, 0, 0)
CLASSES = {"/m/01g317": "Person", "/m/04yx4": "Man", "/m/0bt9lr": "Dog", "/m/0gxl3": "Handgun", "/m/0k4j": "Car"}
GROUPS = {"person": ["Person", "Man"], "animal": ["Dog"], "object": ["Handgun"]}
LABEL = {"person": "/m/01g317", "animal": "/m/0bt9lr", "object": "/m/0gxl3", "car": "/m/0k4j"}
COLUMNS = [
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
]  # fmt: skip


def write_classes(path: Path, header: bool) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        if header:
            writer.writerow(["LabelName", "DisplayName"])
        writer.writerows(CLASSES.items())
    return path


def write_detections(path: Path, rows: list[dict]) -> Path:
    """rows: ImageID, LabelName, box=(xmin, xmax, ymin, ymax) and optional attribute flags (default 0)."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, restval=0)
        writer.writeheader()
        for row in rows:
            coordinates = dict(zip(("XMin", "XMax", "YMin", "YMax"), row["box"], strict=True))
            writer.writerow(
                {"Source": "xclick", "Confidence": 1, **coordinates} | {k: v for k, v in row.items() if k != "box"}
            )
    return path


def solid_image(path: Path, size: tuple[int, int], box: tuple[int, int, int, int], colour=RED) -> None:
    """A blue image with a solid `colour` rectangle at pixel box (left, top, right, bottom)."""
    image = Image.new("RGB", size, BLUE)
    image.paste(colour, box)
    image.save(path)


def fractions(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    left, top, right, bottom = box
    return left / size[0], right / size[0], top / size[1], bottom / size[1]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    paths = {"images": tmp_path / "images", "classes": write_classes(tmp_path / "classes.csv", header=True)}
    paths["images"].mkdir()
    paths["groups"] = tmp_path / "groups.yaml"
    paths["groups"].write_text(yaml.safe_dump(GROUPS))
    return paths


def dataset(inputs: dict[str, Path], per_group: dict[str, int], size=(48, 40), suffix=".png") -> list[dict]:
    """`per_group[g]` images with one 24x16 box each, a red rectangle in a 2-pixel blue frame (so the
    padding is blue); returns their detections rows."""
    rows = []
    box = (8, 12, 32, 28)
    for group, count in per_group.items():
        for i in range(count):
            image_id = f"{group}{i:03d}"
            solid_image(inputs["images"] / f"{image_id}{suffix}", size, (10, 14, 30, 26))
            rows.append({"ImageID": image_id, "LabelName": LABEL[group], "box": fractions(box, size)})
    return rows


def run(inputs: dict[str, Path], rows: list[dict], out: Path, *extra: str) -> int:
    detections = write_detections(inputs["images"].parent / "detections.csv", rows)
    argv = ["--images", str(inputs["images"]), "--detections", str(detections), "--classes", str(inputs["classes"])]
    argv += ["--out", str(out), "--groups", str(inputs["groups"]), "--no-progress", "--workers", "1"]
    argv += ["--min-box-size", "8", *extra]  # the synthetic boxes are small; the last value of an option wins
    return main(argv)


def first_row_of(colour: tuple[int, int, int], path: Path) -> int:
    return int(np.flatnonzero((np.asarray(Image.open(path)) == colour).all(axis=-1).any(axis=1))[0])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in (".png", ".jpg")
    }


def test_box_ends_up_letterboxed_on_its_corners_median(inputs: dict[str, Path], tmp_path: Path) -> None:
    size, box = (200, 120), (40, 20, 140, 70)  # a 100x50 red box on blue
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, box)
    corners = [(0, 200, 0), (0, 210, 0), (0, 220, 0), (255, 255, 255)]  # median: (0, 215, 0)
    for (x, y), colour in zip([(40, 20), (139, 20), (40, 69), (139, 69)], corners, strict=True):
        image.putpixel((x, y), colour)
    image.save(inputs["images"] / "target.png")
    rows = [{"ImageID": "target", "LabelName": LABEL["person"], "box": fractions(box, size)}]
    rows += dataset(inputs, {"person": 4}, size=(60, 50))
    write_classes(inputs["classes"], header=False)  # the older boxable file: no header row

    assert run(inputs, rows, tmp_path / "out", "--format", "png") == 0

    (crop_path,) = (tmp_path / "out").glob("*/person/target_0.png")
    crop = np.asarray(Image.open(crop_path))
    assert crop.shape == (224, 224, 3)
    padding = np.all(crop == (0, 215, 0), axis=-1)
    rows_pasted = np.flatnonzero(~padding.all(axis=1))
    cols_pasted = np.flatnonzero(~padding.all(axis=0))
    # ratio = min(224/100, 224/50) = 2.24: 224x112, the longer side filling the canvas
    assert (len(cols_pasted), len(rows_pasted)) == (224, 112)
    assert np.array_equal(rows_pasted, np.arange(rows_pasted[0], rows_pasted[0] + 112))  # one band
    assert padding.sum() == 224 * 224 - 224 * 112
    top = rows_pasted[0]
    assert np.all(crop[top + 5 : top + 107, 5:219] == RED)

    # The same box shape in other images lands at other seeded offsets.
    tops = {first_row_of(RED, path) for path in (tmp_path / "out").glob("*/person/person*_0.png")}
    assert len(tops) > 1


def test_split_is_stratified_8_to_2_and_independent_of_workers(inputs: dict[str, Path], tmp_path: Path) -> None:
    rows = dataset(inputs, {"person": 10, "animal": 5, "object": 15}, suffix=".jpg")
    assert run(inputs, rows, tmp_path / "one", "--canvas-size", "32") == 0
    assert run(inputs, rows, tmp_path / "two", "--canvas-size", "32", "--workers", "2") == 0

    expected = {"train": {"animal": 4, "object": 12, "person": 8}, "val": {"animal": 1, "object": 3, "person": 2}}
    for split, groups in expected.items():
        for group, count in groups.items():
            assert len(list((tmp_path / "one" / split / group).glob("*.jpg"))) == count
    report = json.loads((tmp_path / "one" / "prepare_report.json").read_text())
    assert report["crops"] == expected
    assert report["written"] == 30
    one = {name: data for name, (data, _) in snapshot(tmp_path / "one").items()}
    two = {name: data for name, (data, _) in snapshot(tmp_path / "two").items()}
    assert one == two


def test_unusable_rows_are_skipped_and_counted(inputs: dict[str, Path], tmp_path: Path) -> None:
    rows = dataset(inputs, {"person": 5, "object": 5})
    size = (48, 40)
    rows += [
        {"ImageID": "person000", "LabelName": LABEL["person"], "box": fractions((0, 0, 10, 30), size)},  # 10 px wide
        {"ImageID": "person000", "LabelName": LABEL["car"], "box": (0.1, 0.9, 0.1, 0.9)},
        {"ImageID": "person001", "LabelName": LABEL["person"], "box": (0.8, 0.2, 0.1, 0.9)},  # XMin > XMax
        {"ImageID": "person001", "LabelName": LABEL["person"], "box": (0.1, 0.9, 0.1, 0.9), "IsGroupOf": 1},
        {"ImageID": "nowhere", "LabelName": LABEL["person"], "box": (0.1, 0.9, 0.1, 0.9)},
        {"ImageID": "empty", "LabelName": LABEL["object"], "box": (0.1, 0.9, 0.1, 0.9)},
        {"ImageID": "truncated", "LabelName": LABEL["object"], "box": (0.1, 0.9, 0.1, 0.9)},
    ]
    (inputs["images"] / "empty.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inputs["images"] / "truncated.jpg")
    data = (inputs["images"] / "truncated.jpg").read_bytes()
    (inputs["images"] / "truncated.jpg").write_bytes(data[: len(data) // 2])  # header fine, pixels cut

    assert run(inputs, rows, tmp_path / "out", "--min-box-size", "12", "--exclude", "group_of") == 0

    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    assert report["skipped"] == {
        "excluded (IsGroupOf)": 1,
        "image missing": 1,
        "invalid coordinates": 1,
        "label not mapped": 1,
        "too small": 1,
        "unreadable image": 2,
    }
    # The truncated image fails only when decoded, after the split was drawn: totals, not the 8:2, are exact.
    totals = {group: report["crops"]["train"][group] + report["crops"]["val"][group] for group in GROUPS}
    assert totals == {"person": 5, "animal": 0, "object": 5}
    assert [Path(problem.split(":")[0]).name for problem in report["unreadable_images"]] == [
        "empty.jpg",
        "truncated.jpg",
    ]
    assert not [p for p in (tmp_path / "out").rglob("*.jpg") if p.stem.startswith(("empty", "truncated"))]


def test_second_run_changes_nothing(inputs: dict[str, Path], tmp_path: Path) -> None:
    rows = dataset(inputs, {"person": 5, "animal": 5})
    out = tmp_path / "out"
    assert run(inputs, rows, out, "--canvas-size", "32") == 0
    first = snapshot(out)
    assert run(inputs, rows, out, "--canvas-size", "32") == 0
    assert snapshot(out) == first
    report = json.loads((out / "prepare_report.json").read_text())
    assert (report["written"], report["already_present"]) == (0, 10)


def test_other_settings_refuse_stale_crops_until_pruned(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    rows = dataset(inputs, {"person": 5, "animal": 5})
    out = tmp_path / "out"
    assert run(inputs, rows, out, "--canvas-size", "32") == 0
    first = snapshot(out)

    assert run(inputs, rows, out, "--canvas-size", "32", "--seed", "7") == 2
    assert "--seed" in capsys.readouterr().err
    assert snapshot(out) == first
    assert run(inputs, rows, out, "--canvas-size", "32", "--seed", "7", "--prune") == 0
    report = json.loads((out / "prepare_report.json").read_text())
    assert (report["pruned"], report["written"]) == (10, 10)

    assert run(inputs, rows[1:], out, "--canvas-size", "32", "--seed", "7") == 2  # one box fewer
    assert "--prune" in capsys.readouterr().err


def test_class_description_variants_read_alike(tmp_path: Path) -> None:
    with_header = read_class_descriptions(write_classes(tmp_path / "v7.csv", header=True))
    without = read_class_descriptions(write_classes(tmp_path / "boxable.csv", header=False))
    assert with_header == without == CLASSES


def test_unknown_display_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"'Persn'.*close: Person"):
        resolve_groups({"person": ["Persn"]}, CLASSES)


def test_default_groups_cover_the_study() -> None:
    groups = yaml.safe_load(DEFAULT_GROUPS.read_text())
    assert sorted(groups) == ["animal", "object", "person"]
    assert {"Person", "Man", "Woman", "Boy", "Girl"} == set(groups["person"])
    assert "Monkey" not in groups["animal"] and "Handgun" in groups["object"]


@pytest.mark.parametrize("option", ["--images", "--detections", "--classes", "--groups"])
def test_missing_input_is_named(inputs: dict[str, Path], tmp_path: Path, option: str, capsys) -> None:
    detections = write_detections(tmp_path / "detections.csv", dataset(inputs, {"person": 2}))
    paths = {"--images": inputs["images"], "--detections": detections, "--classes": inputs["classes"]}
    paths |= {"--groups": inputs["groups"], option: tmp_path / "absent"}
    argv = [str(x) for option_, path in paths.items() for x in (option_, path)] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and str(tmp_path / "absent") in err
    with pytest.raises(ConfigError, match=option):
        prepare_openimages(
            paths["--images"], paths["--detections"], paths["--classes"], tmp_path / "out", groups=paths["--groups"]
        )
