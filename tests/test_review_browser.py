"""The face-set reviewer in a real browser: Debian's headless Chromium driven by Selenium.

Needs ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``;
``.ci/run`` installs them). Without them these tests fail, unless
``PROGRESSIVE_SWAP_SKIP_BROWSER=1`` says to skip them (a machine without the browser).
Selenium Manager is never asked for anything: the driver's path is given.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_blob_faceset

from progressive_swap import faceset as F
from progressive_swap.faceset import review

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,800"]


def _browser_missing() -> str | None:
    for p in (CHROMIUM, CHROMEDRIVER):
        if not os.access(p, os.X_OK):
            return f"{p} is missing: apt-get install -y chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def driver():
    missing = _browser_missing()
    if missing:
        if os.environ.get("PROGRESSIVE_SWAP_SKIP_BROWSER") == "1":
            pytest.skip(f"browser tests skipped (PROGRESSIVE_SWAP_SKIP_BROWSER=1): {missing}")
        pytest.fail(f"browser tests need Chromium: {missing} (or set PROGRESSIVE_SWAP_SKIP_BROWSER=1 to skip)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="review-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(pred, timeout=15.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(d, version=None):
    """The grid is painted (and shows ``version`` of the set, when given) and no request is running."""
    _wait(lambda: d.execute_script(
        "return document.body.dataset.ready === '1' && !document.body.dataset.busy"
        " && (arguments[0] === null || document.body.dataset.version === arguments[0])", version),
        what="the grid")


def _cell(d, face_id):
    return d.find_element("css selector", f'.cell[data-id="{face_id}"]')


def test_sort_remove_undo_paint(tmp_path, driver):
    d = driver
    path = write_blob_faceset(tmp_path / "A", 0, n=24, size=64)
    hull = np.zeros((64, 64), np.float32)
    hull[16:48, 16:48] = 1.0
    for i in range(3):  # an automatic mask the painted one must not replace
        F.open(path).write_mask(i, "hull", hull)
    srv = review.start(path)
    try:
        d.get(srv.url)
        _ready(d)
        assert d.find_element("id", "title").text == str(path)
        # sort by size, descending: the grid follows the server's order
        from selenium.webdriver.support.ui import Select

        Select(d.find_element("id", "sort")).select_by_value("size")
        Select(d.find_element("id", "order")).select_by_value("desc")
        _wait(lambda: d.execute_script("return window.review.key") == "size", what="sort")
        _ready(d)
        ids = d.execute_script("return window.review.ids")
        fs = F.open(path)
        from progressive_swap.faceset import curate

        sizes = curate.face_scores(fs, ["size"])["size"]
        assert ids == [fs.ids[i] for i in curate.sort_order(sizes, True)]
        shown = [e.get_attribute("data-id") for e in d.find_elements("css selector", ".cell")][:3]
        assert shown == ids[:3]

        # delete three faces (two at once, then one), undo the last
        a, b, c = ids[3], ids[4], ids[5]
        _cell(d, a).click()
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(d).key_down(Keys.CONTROL).click(_cell(d, b)).key_up(Keys.CONTROL).perform()
        assert d.find_element("id", "selcount").text == "2 selected"
        d.find_element("id", "remove").click()
        _wait(lambda: "removed 2" in d.find_element("id", "status").text, what="remove")
        _ready(d)
        _cell(d, c).click()
        d.find_element("id", "remove").click()
        _wait(lambda: "removed 1" in d.find_element("id", "status").text, what="remove")
        assert len(F.open(path)) == 21
        d.find_element("id", "undo").click()
        _wait(lambda: "restored 1" in d.find_element("id", "status").text, what="undo")
        on_disk = F.open(path).ids
        trash = F.open(review.default_trash_path(path)).ids
        assert len(on_disk) == 22 and c in on_disk and a not in on_disk and b not in on_disk
        assert sorted(trash) == sorted([a, b])
        assert (Path(str(path) + ".trash") / "images" / f"{a}.png").is_file()  # moved, not deleted

        # paint a stroke on face 0's hull mask and save it
        target = F.open(path).ids[0]
        _ready(d)
        d.execute_script("document.querySelector(`.cell[data-id=\"${arguments[0]}\"]`).scrollIntoView()", target)
        ActionChains(d).double_click(_cell(d, target)).perform()
        _wait(lambda: "editing hull" in d.find_element("id", "estatus").text, what="the mask editor")
        canvas = d.find_element("id", "emask")
        w = canvas.size["width"]
        d.execute_script("document.getElementById('bsize').value = 8")
        # a horizontal stroke across the top of the crop, outside the automatic hull
        ActionChains(d).move_to_element_with_offset(canvas, int(-w * 0.35), int(-w * 0.4)).click_and_hold() \
            .move_by_offset(int(w * 0.35), 0).move_by_offset(int(w * 0.3), 0).release().perform()
        assert d.execute_script("return window.reviewEditor.dirty")
        d.find_element("id", "esave").click()
        _wait(lambda: "saved user_hull" in d.find_element("id", "estatus").text, what="the save")
        fs = F.open(path)
        user = fs.mask(target, "user_hull")
        assert user is not None and fs.mask_path(target, "user_hull").is_file()
        np.testing.assert_array_equal(fs.mask(target, "hull"), hull)  # the automatic mask is untouched
        assert user[4:10].max() > 0.99 and user[16:48, 16:48].min() > 0.99  # the stroke, plus the loaded hull
        assert 0 < user[4:12].sum() < 64 * 8  # a stroke, not a fill
        soft = user[(user > 0.01) & (user < 0.99)]
        assert soft.size > 0  # a soft edge, stored in 16 bits
        d.find_element("id", "eclose").click()
        d.save_screenshot(str(tmp_path / "grid.png"))
    finally:
        srv.shutdown()
        srv.server_close()


def test_page_reports_refusals_and_a_face_gone(tmp_path, driver):
    """A save refused by the set's lock says why in the page and keeps the edit; a face removed
    by another tool while the page is open is followed (grid reloaded, its save refused)."""
    d = driver
    path = write_blob_faceset(tmp_path / "B", 1, n=6, size=32)
    srv = review.start(path)
    try:
        d.get(srv.url)
        _ready(d)
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(d).double_click(_cell(d, "f002")).perform()
        _wait(lambda: "no occlusion mask yet" in d.find_element("id", "estatus").text, what="editor")
        canvas = d.find_element("id", "emask")
        ActionChains(d).move_to_element(canvas).click_and_hold().move_by_offset(20, 5).release().perform()
        with F.open_writer(path):  # another process holds the writer lock (here: this one)
            d.find_element("id", "esave").click()
            _wait(lambda: "NOT SAVED" in d.find_element("id", "estatus").text, what="refusal")
            assert "open for writing by another process" in d.find_element("id", "estatus").text
        assert d.execute_script("return window.reviewEditor.dirty")  # the edit is still in the page
        F.open(path).remove(["f002"])  # another tool removes the face being edited
        d.find_element("id", "esave").click()
        _wait(lambda: "no longer in the set" in d.find_element("id", "estatus").text, what="gone")
        assert not (path / "masks" / "user_occlusion").exists()
        d.find_element("id", "ekind")  # the editor is still open with the edit
        d.execute_script("window.confirm = () => true")
        d.find_element("id", "eclose").click()
        _wait(lambda: "changed on disk" in d.find_element("id", "status").text, timeout=10, what="poll")
        assert "f002" not in d.execute_script("return window.review.ids")
    finally:
        srv.shutdown()
        srv.server_close()
