"""The face-set reviewer's server over HTTP (urllib): moves, undo, mask saves and bad input."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import write_blob_faceset

from progressive_swap import faceset as F
from progressive_swap.cli import faceset as cli
from progressive_swap.faceset import curate, review


@pytest.fixture()
def served(tmp_path):
    path = write_blob_faceset(tmp_path / "A", 0, n=8, size=32)
    srv = review.start(path)
    yield path, srv
    srv.shutdown()
    srv.server_close()


def _req(srv, method, url, body=None, token=True, headers=None):
    h = dict(headers or {})
    if token:
        h["X-Review-Token"] = srv.reviewer.token
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(srv.url + url.lstrip("/"), data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def _err(body: bytes) -> str:
    return json.loads(body)["error"]


def test_page_and_static_files_are_served(served):
    _, srv = served
    st, body, h = _req(srv, "GET", "/")
    assert st == 200 and srv.reviewer.token.encode() in body and b"/static/app.js" in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # nothing fetched from elsewhere
    for f in ("app.js", "style.css"):
        st, body, _ = _req(srv, "GET", f"/static/{f}")
        assert st == 200 and body and b"https://" not in body
    assert _req(srv, "GET", "/static/..%2Freview.py")[0] == 404


def test_remove_move_undo(served, tmp_path):
    path, srv = served
    st, body, _ = _req(srv, "POST", "/api/remove", {"ids": ["f001", "f002"]})
    assert st == 200, body
    st, body, _ = _req(srv, "POST", "/api/move", {"ids": ["f003"], "dest": "B"})
    assert st == 200 and json.loads(body)["to"] == str((tmp_path / "B").resolve())
    assert F.open(path).ids == ["f000", "f004", "f005", "f006", "f007"]
    assert F.open(tmp_path / "A.trash").ids == ["f001", "f002"] and F.open(tmp_path / "B").ids == ["f003"]
    assert _req(srv, "POST", "/api/undo", {})[0] == 200  # f003 back from B
    assert _req(srv, "POST", "/api/undo", {})[0] == 200  # f001, f002 back from the trash
    assert sorted(F.open(path).ids) == [f"f{i:03d}" for i in range(8)] and F.open(path).validate(deep=True) == []
    st, body, _ = _req(srv, "POST", "/api/undo", {})
    assert st == 409 and "nothing to undo" in _err(body)
    st, body, _ = _req(srv, "POST", "/api/remove", {"ids": ["f001", "nobody"]})
    assert st == 409 and "no face 'nobody'" in _err(body) and len(F.open(path)) == 8


def test_changes_need_the_page_token_and_a_local_host(served):
    path, srv = served
    assert _req(srv, "POST", "/api/remove", {"ids": ["f001"]}, token=False)[0] == 403
    st, body, _ = _req(srv, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert st == 403 and "Host" in _err(body)
    assert len(F.open(path)) == 8


def test_mask_save_is_versioned_locked_and_16_bit(served):
    path, srv = served
    st, body, h = _req(srv, "GET", "/api/mask/f000?kind=hull")
    assert st == 200 and len(body) == 32 * 32 * 2 and h["X-Mask-Source"] == "none" and h["X-Mask-Version"] == "none"
    m = np.linspace(0, 65535, 32 * 32).round().astype("<u2")
    st, body, _ = _req(srv, "PUT", "/api/mask/f000?kind=hull", m.tobytes(), headers={"X-Mask-Version": "none"})
    assert st == 200, body
    v1 = json.loads(body)["version"]
    fs = F.open(path)
    np.testing.assert_array_equal(np.round(fs.mask("f000", "user_hull") * 65535).astype(np.uint16).ravel(), m)
    assert not fs.has_mask("f000", "hull")  # only the user_ mask is written
    # a second tab that loaded the mask before this save is refused, and says why
    st, body, _ = _req(srv, "PUT", "/api/mask/f000?kind=hull", m.tobytes(), headers={"X-Mask-Version": "none"})
    assert st == 409 and "changed since this page loaded it" in _err(body)
    # another process holds the writer lock: refused, nothing written
    with F.open_writer(path):
        st, body, _ = _req(srv, "PUT", "/api/mask/f000?kind=hull", (m // 2).tobytes(), headers={"X-Mask-Version": v1})
    assert st == 409 and "open for writing by another process" in _err(body)
    np.testing.assert_array_equal(np.round(F.open(path).mask("f000", "user_hull") * 65535).ravel(), m)
    # wrong size, bad kind, a face that is gone
    st, body, _ = _req(srv, "PUT", "/api/mask/f000?kind=hull", b"\0" * 10, headers={"X-Mask-Version": v1})
    assert st == 400 and "32x32" in _err(body)
    assert _req(srv, "PUT", "/api/mask/f000?kind=Bad-Name", m.tobytes())[0] == 400
    curate.remove_faces(path, ["f001"])  # by another tool, while the page is open
    st, body, _ = _req(srv, "PUT", "/api/mask/f001?kind=hull", m.tobytes(), headers={"X-Mask-Version": "none"})
    assert st == 410 and "no longer in the set" in _err(body)
    assert not (path / "masks" / "user_hull" / "f001.png").exists()
    st, body, _ = _req(srv, "GET", "/thumb/f001")
    assert st == 410 and "no longer in the set" in _err(body)
    assert "f001" not in json.loads(_req(srv, "GET", "/api/faces")[1])["ids"]


def test_thumbnails_are_cached_and_follow_changes(served):
    path, srv = served
    st, a, h = _req(srv, "GET", "/thumb/f002")
    assert st == 200 and h["Content-Type"] == "image/jpeg"
    cached = path / "cache" / "thumbs" / "f002.jpg"
    assert cached.read_bytes() == a
    F.open(path).write_mask("f002", "hull", np.ones((32, 32), np.float32))
    st, b, _ = _req(srv, "GET", "/thumb/f002?overlay=hull")
    assert st == 200 and b != a and (path / "cache" / "thumbs" / "f002.hull.jpg").is_file()
    # the writer keeps cache/ (it deletes only journaled debris)
    with F.open_writer(path):
        pass
    assert cached.is_file()
    (path / "images" / "f003.png").unlink()  # an image vanishes from disk
    st, body, _ = _req(srv, "GET", "/thumb/f003")
    assert st == 404 and "missing" in _err(body)
    with pytest.raises(F.FaceSetError, match="repair"):  # and the set is refused for changes
        F.open_writer(path)


def test_sorted_faces_match_curate(served):
    path, srv = served
    d = json.loads(_req(srv, "GET", "/api/faces?sort=size")[1])
    fs = F.open(path)
    sizes = curate.face_scores(fs, ["size"])["size"]
    assert d["ids"] == [fs.ids[i] for i in curate.sort_order(sizes, True)] and d["descending"]
    assert _req(srv, "GET", "/api/faces?sort=colour")[0] == 400


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    path = write_blob_faceset(tmp_path / "A", 0, n=3, size=32)
    with socket.socket() as s:  # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["review", str(path), f"port={port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in err
    assert cli.main(["review", str(path), "port=abc"]) == 2 and "port must be" in capsys.readouterr().err
    bad = tmp_path / "bad"
    write_blob_faceset(bad, 0, n=3, size=32)
    shard = next((bad / "index").iterdir())
    shard.write_bytes(shard.read_bytes()[:100])  # a damaged face set
    assert cli.main(["review", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shard" in err
    assert cli.main(["review", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "A.trash").exists() and len(F.open(path)) == 3


def test_move_faces_keeps_both_sets_whole(tmp_path):
    a = write_blob_faceset(tmp_path / "A", 0, n=5, size=32)
    F.open(a).write_mask("f001", "hull", np.ones((32, 32), np.float32))
    assert curate.move_faces(a, ["f001", "f003"], tmp_path / "B") == 2
    b = F.open(tmp_path / "B")
    assert b.ids == ["f001", "f003"] and b.has_mask("f001", "hull") and b.validate(deep=True) == []
    assert b.record("f003").frame_index == 3
    other = write_blob_faceset(tmp_path / "C", 1, n=2, size=32)  # its own f001
    with pytest.raises(ValueError, match="already in"):
        curate.move_faces(other, ["f001"], tmp_path / "B")
    assert F.open(other).ids == ["f000", "f001"] and len(F.open(tmp_path / "B")) == 2
    full = write_blob_faceset(tmp_path / "Full", 0, n=1, size=32, face_type="full")
    with pytest.raises(F.FaceSetError, match="face_type"):
        curate.move_faces(a, ["f000"], full)
    assert F.open(a).ids == ["f000", "f002", "f004"]


# -- confinement: where moves may go, what requests may look like -----------------------------------


def test_moves_go_only_beside_the_set_and_never_into_it_or_a_non_faceset(served, tmp_path):
    path, srv = served
    write_blob_faceset(tmp_path / "B", 1, n=2, size=32)  # an existing face set beside A
    (tmp_path / "notes").mkdir()  # a folder beside A that is not a face set
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    far = write_blob_faceset(tmp_path / "far" / "D", 1, n=1, size=32)  # a face set, but not beside A
    (tmp_path / "link").symlink_to(far, target_is_directory=True)  # beside A by name only
    refused = {
        "A": "inside it", str(path): "inside it", "A/images": "inside it", str(path / "images"): "inside it",
        "A/new": "inside it", "notes": "not a face set", str(far): "not beside", "far/C": "not beside",
        "../C": "not beside", "/tmp/anywhere": "not beside", "link": "not beside", "": "give the face set",
    }
    listing = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for dest, why in refused.items():
        st, body, _ = _req(srv, "POST", "/api/move", {"ids": ["f003"], "dest": dest})
        assert st == 400 and why in _err(body), (dest, st, body)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == listing  # no skeleton anywhere
    assert len(F.open(path)) == 8 and (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    for dest in ("B", str(tmp_path / "C")):  # an existing face set beside it, and a new folder there
        st, body, _ = _req(srv, "POST", "/api/move", {"ids": ["f003" if dest == "B" else "f004"], "dest": dest})
        assert st == 200, body
    assert F.open(tmp_path / "B").ids == ["f000", "f001", "f003"] and F.open(tmp_path / "C").ids == ["f004"]


def test_undo_removes_the_face_sets_a_move_created(served, tmp_path):
    path, srv = served
    write_blob_faceset(tmp_path / "B", 1, n=2, size=32)
    before = sorted(p.name for p in tmp_path.iterdir())
    steps = [("/api/remove", {"ids": ["f001"]}), ("/api/move", {"ids": ["f002"], "dest": "C"}),
             ("/api/move", {"ids": ["f005"], "dest": "C"}), ("/api/move", {"ids": ["f006"], "dest": "B"})]
    for url, body in steps:
        assert _req(srv, "POST", url, body)[0] == 200
    assert (tmp_path / "A.trash").is_dir() and (tmp_path / "C").is_dir()
    removed = [json.loads(_req(srv, "POST", "/api/undo", {})[1])["removed"] for _ in steps]
    # B existed: kept; C's second move did not create it, its first did; the trash was made by the removal
    assert removed == [None, None, str((tmp_path / "C").resolve()), str(tmp_path / "A.trash")]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no skeleton left behind
    assert sorted(F.open(path).ids) == [f"f{i:03d}" for i in range(8)]
    assert F.open(tmp_path / "B").ids == ["f000", "f001"]


def test_an_emptied_created_set_that_another_tool_filled_is_kept_on_undo(served, tmp_path):
    path, srv = served
    assert _req(srv, "POST", "/api/move", {"ids": ["f002"], "dest": "C"})[0] == 200
    curate.move_faces(path, ["f003"], tmp_path / "C")  # another tool adds a face meanwhile
    st, body, _ = _req(srv, "POST", "/api/undo", {})
    assert st == 200 and json.loads(body)["removed"] is None
    assert F.open(tmp_path / "C").ids == ["f003"]


@pytest.mark.parametrize("body", [b"[]", b'["f001"]', b"null", b"3", b'"f001"'])
def test_request_bodies_must_be_json_objects(served, body):
    path, srv = served
    for url in ("/api/remove", "/api/move", "/api/undo"):
        st, reply, _ = _req(srv, "POST", url, body)
        assert st == 400 and "JSON object" in _err(reply), (url, st, reply)
    assert len(F.open(path)) == 8 and not (path.parent / "A.trash").exists()


@pytest.mark.parametrize("length", [None, "-1", "-100", "abc", "1e3", " ", "²"])
def test_a_missing_negative_or_non_numeric_content_length_is_400_and_nothing_runs(served, length):
    path, srv = served
    body = json.dumps({"ids": ["f001"]}).encode()
    head = (f"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Review-Token: {srv.reviewer.token}\r\n"
            "Content-Type: application/json\r\n" + (f"Content-Length: {length}\r\n" if length is not None else ""))
    with socket.create_connection(srv.server_address[:2], timeout=5) as s:  # the client stays connected
        s.sendall(head.encode("utf-8") + b"\r\n" + body)
        reply = b""
        while chunk := s.recv(65536):  # until the server closes: it must answer without waiting for us
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"Content-Length >= 0" in reply
    assert len(F.open(path)) == 8 and not (path.parent / "A.trash").exists() and srv.reviewer.undo == []


def test_the_page_cannot_be_framed_by_another_site(served):
    _, srv = served
    for url in ("/", "/static/app.js", "/api/info"):
        st, _, h = _req(srv, "GET", url)
        assert st == 200 and h["X-Frame-Options"] == "DENY", url
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"], url
