"""The local store, file:// references, bundle names, schemes and unsafe archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from gatewright import store
from gatewright.build.bundle import pack
from gatewright.errors import BundleError, StoreError
from gatewright.store import LocalStore, open_store, pull, push
from tests.store.conftest import bundle_files

CACHE_KEY = "3f" * 32


def test_round_trip_is_byte_identical(bundle: Path, tmp_path: Path) -> None:
    local = open_store(tmp_path / "store")
    assert isinstance(local, LocalStore)
    assert local.uri == (tmp_path / "store").as_uri()
    assert not local.has_bundle("digits-v1")

    ref = local.put_bundle(bundle, "digits-v1")

    stored = tmp_path / "store" / "bundles" / "digits-v1.tar"
    assert ref == stored.as_uri() == local.reference("digits-v1")
    assert local.has_bundle("digits-v1")
    assert stored.read_bytes() == local.bundle_bytes("digits-v1") == pack(bundle)
    assert sorted(p.name for p in stored.parent.iterdir()) == ["digits-v1.tar"]  # no temporary file left
    assert stored.stat().st_mode & 0o777 == 0o644
    got = local.get_bundle("digits-v1", tmp_path / "out")
    assert got.path == tmp_path / "out"
    assert got.manifest["target"] == "generic"
    assert bundle_files(got.path) == bundle_files(bundle)
    assert bundle_files(bundle)["reports/run.sh"][1]  # the executable bit survives
    assert pack(pull(ref, tmp_path / "pulled").path) == pack(bundle)


def test_put_replaces_a_stored_bundle(bundle: Path, tmp_path: Path) -> None:
    local = open_store(str(tmp_path / "store"))
    local.put_bundle(bundle, CACHE_KEY)
    other = tmp_path / "other"
    pull(local.reference(CACHE_KEY), other)
    (other / "build.log").write_text("changed\n")
    local.put_bundle(other, CACHE_KEY)
    assert local.bundle_bytes(CACHE_KEY) == pack(other) != pack(bundle)
    assert sorted(p.name for p in (tmp_path / "store" / "bundles").iterdir()) == [f"{CACHE_KEY}.tar"]


def test_store_uri_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spaced = tmp_path / "my store"
    assert open_store(spaced.as_uri()).uri == spaced.as_uri()
    assert open_store(f"file://localhost{tmp_path}").uri == tmp_path.as_uri()
    monkeypatch.chdir(tmp_path)
    assert open_store("relative").uri == (tmp_path / "relative").as_uri()
    with pytest.raises(StoreError, match=r"not host 'server'.*three slashes"):
        open_store("file://server/share")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(tmp_path / "a-file")


def test_missing_bundle_names_the_reference(tmp_path: Path) -> None:
    local = open_store(tmp_path)
    ref = (tmp_path / "bundles" / "nope.tar").as_uri()
    with pytest.raises(StoreError) as error:
        local.get_bundle("nope", tmp_path / "out")
    assert str(error.value).startswith(f"{ref}: no bundle named 'nope' in the store {tmp_path.as_uri()}")
    assert "gatewright push" in str(error.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(StoreError, match=r"nothing\.tar: no such bundle archive"):
        pull((tmp_path / "nothing.tar").as_uri(), tmp_path / "out")


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "../x", "a b", "naïve", "x" * 129, "a:b"])
def test_bad_names_are_refused(bundle: Path, tmp_path: Path, name: str) -> None:
    local = open_store(tmp_path)
    for call in (
        lambda: local.put_bundle(bundle, name),
        lambda: local.has_bundle(name),
        lambda: local.bundle_bytes(name),
    ):
        with pytest.raises(StoreError, match="is not valid: use 1 to 128 letters, digits"):
            call()
    assert not (tmp_path / "bundles").exists()


@pytest.mark.parametrize("name", ["x" * 128, CACHE_KEY, "digits-v1", "_x.y-Z", "0"])
def test_good_names(bundle: Path, tmp_path: Path, name: str) -> None:
    assert store.check_name(name) == name
    assert open_store(tmp_path).put_bundle(bundle, name).endswith(f"/bundles/{name}.tar")


def test_unknown_scheme_lists_the_schemes() -> None:
    with pytest.raises(StoreError) as error:
        open_store("ftp://bob:hunter2@example.org/bundles")
    message = str(error.value)
    assert message.startswith("ftp://example.org/bundles: unknown store scheme 'ftp://'")
    assert "file:///DIR" in message and "s3://BUCKET" in message and "oci://HOST" in message
    assert "hunter2" not in message and "bob" not in message
    for call in (lambda: push(Path("."), "gopher://x/y"), lambda: pull("gopher://x/y", Path("out"))):
        with pytest.raises(StoreError, match=r"'gopher://'.*oci://HOST.*s3://BUCKET.*file:///PATH"):
            call()


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a firmware bundle"):
        open_store(tmp_path / "store").put_bundle(tmp_path / "notes", "notes")
    assert not (tmp_path / "store" / "bundles" / "notes.tar").exists()


def test_push_and_pull_file_references(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "exports" / "mlp.tar"
    ref = push(bundle, target.as_uri())
    assert ref == target.as_uri()
    assert target.read_bytes() == pack(bundle)
    assert bundle_files(pull(ref, tmp_path / "a").path) == bundle_files(bundle)
    assert push(bundle, str(tmp_path / "plain.tar")) == (tmp_path / "plain.tar").as_uri()
    assert pack(pull(str(tmp_path / "plain.tar"), tmp_path / "b").path) == pack(bundle)
    with pytest.raises(StoreError, match="is a directory; name a file"):
        push(bundle, (tmp_path / "exports").as_uri())


def _tar(members: list[tarfile.TarInfo], data: bytes = b"{}") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "evil",
    [
        tarfile.TarInfo("../escaped.txt"),
        tarfile.TarInfo("sub/../../escaped.txt"),
        _link("link", "../escaped.txt", tarfile.SYMTYPE),
        _link("hard", "/etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "symlink", "hardlink"],
)
def test_an_archive_with_path_traversal_is_refused(tmp_path: Path, evil: tarfile.TarInfo) -> None:
    local = open_store(tmp_path / "store")
    archive = _tar([tarfile.TarInfo("manifest.json"), evil])
    (tmp_path / "store" / "bundles").mkdir(parents=True)
    (tmp_path / "store" / "bundles" / "evil.tar").write_bytes(archive)
    with pytest.raises(BundleError, match="damaged or unsafe"):
        local.get_bundle("evil", tmp_path / "work" / "out")
    with pytest.raises(BundleError, match="damaged or unsafe"):
        pull((tmp_path / "store" / "bundles" / "evil.tar").as_uri(), tmp_path / "work" / "out")
    assert not (tmp_path / "work" / "out").exists()
    assert not (tmp_path / "work" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "work").iterdir()) == []  # the staging folder is gone too


def test_an_absolute_member_stays_inside(bundle: Path, tmp_path: Path) -> None:
    """tarfile's data filter makes an absolute name relative: the file lands inside the bundle."""
    escape = tmp_path / "absolute-escape.txt"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(bundle / "manifest.json", "manifest.json")
        info = tarfile.TarInfo(str(escape))
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "evil.tar").write_bytes(buffer.getvalue())
    got = pull(str(tmp_path / "evil.tar"), tmp_path / "out")
    assert not escape.exists()
    assert (got.path / str(escape).lstrip("/")).read_bytes() == b"evil"
