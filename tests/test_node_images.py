"""How an image reaches the node's containerd: the OCI layout node_images.import_image sends.

The import itself, and pods running what it imported, are proven on the real node
(test_node_cluster.py, test_images_node.py, test_agent_pod_node.py); here, what is sent.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from foundry.dev.node_config import PAUSE_IMAGE
from foundry.dev.node_images import DOCKER_MANIFEST, busybox_image, pause_image, read_docker_archive


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def _layout(tar: Path, name: str, skip: set[str]) -> tuple[dict[str, bytes], str]:
    archive = read_docker_archive(tar)
    assert archive is not None
    manifest = archive.manifest_bytes()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    out = io.BytesIO()
    archive.write_oci_layout(out, name, manifest, digest, skip=skip)
    return _members(out.getvalue()), digest


def test_the_layout_names_the_image_and_carries_every_blob_the_manifest_lists():
    tar = pause_image()
    members, digest = _layout(tar, PAUSE_IMAGE, skip=set())
    index = json.loads(members["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == digest and entry["mediaType"] == DOCKER_MANIFEST
    assert entry["annotations"] == {"io.containerd.image.name": PAUSE_IMAGE}
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest = json.loads(members[f"blobs/sha256/{digest[7:]}"])
    blobs = [manifest["config"], *manifest["layers"]]
    for blob in blobs:  # each blob is there, with the digest and size the manifest says
        data = members[f"blobs/sha256/{blob['digest'][7:]}"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"] and len(data) == blob["size"]
    # The layers are the archive's own bytes: the image containerd gets is the tarball's.
    with tarfile.open(tar) as tf:
        (docker,) = json.load(tf.extractfile("manifest.json"))
        assert [tf.extractfile(name).read() for name in docker["Layers"]] == \
            [members[f"blobs/sha256/{layer['digest'][7:]}"] for layer in manifest["layers"]]


def test_layers_containerd_has_are_left_out_and_the_manifest_stays_the_same():
    tar = busybox_image()
    full, digest = _layout(tar, "foundry.local/busybox:1", skip=set())
    archive = read_docker_archive(tar)
    layers = {d for d, _, _ in archive.layers}
    lean, again = _layout(tar, "foundry.local/busybox:1", skip=layers)
    assert again == digest  # the same archive is always the same manifest: a second import is a no-op
    assert {f"blobs/sha256/{d[7:]}" for d in layers} <= set(full) and not {f"blobs/sha256/{d[7:]}" for d in layers} & set(lean)
    assert set(full) - set(lean) == {f"blobs/sha256/{d[7:]}" for d in layers}


def test_an_archive_not_named_by_digest_is_not_read_as_one(tmp_path):
    tar = tmp_path / "plain.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in {"manifest.json": json.dumps([{"Config": "config.json", "Layers": ["l/layer.tar"]}]).encode(),
                           "config.json": b"{}", "l/layer.tar": b""}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert read_docker_archive(tar) is None  # import_image falls back to `ctr images import` of the file


def _build_pause_binary(cache: str) -> str:
    import os

    os.environ["FOUNDRY_CACHE_DIR"] = cache
    from foundry.dev import node_images

    return str(node_images._static_binary("pause", node_images.PAUSE_C))


def test_workers_building_the_same_binary_at_once_all_get_it(tmp_path):
    # Two pytest workers start their nodes together on a fresh machine, and both need the pause
    # binary. They once compiled to the same temporary name: the first rename won, the second raised
    # FileNotFoundError and every real-node test of that worker errored.
    import multiprocessing

    # (The old code failed in 4 of 5 such rounds here; three rounds make a miss unlikely.)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for round_ in range(3):
            cache = tmp_path / f"cache-{round_}"
            paths = pool.map(_build_pause_binary, [str(cache)] * 4)
            assert len(set(paths)) == 1
            built = Path(paths[0])
            assert built.stat().st_size > 0 and built.stat().st_mode & 0o111
            assert sorted(p.name for p in built.parent.iterdir() if not p.name.startswith(".")) == [built.name]
