#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/seed-*).

Seeds come from the repository (registry/, mirror-policy/, tests/fixtures/archives/) plus a
few hand-made inputs that reach the interesting branches (symlinks, hardlinks and `..` in
archives, git-style patches, auth configs). Run from anywhere: python3 fuzz/make_seeds.py
Needs python3 and the xz, zstd and bzip2 command-line tools (for the archive seeds).
"""

import base64
import io
import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"
REGISTRY = REPO / "registry"
ARCHIVES = REPO / "tests" / "fixtures" / "archives"

# Order of ArchiveType in fuzz_targets/archive.rs (byte 0, bits 0-2, % 7), and strip prefix (bits 3-4).
TYPES = ["tar.gz", "tgz", "tar.xz", "tar.zst", "tar.bz2", "tar", "zip"]
PREFIXES = ["", "pkg", "pkg/sub", "a"]


def seed(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def slug(p):
    return str(p).replace("/", "_")


def registry_files(pattern):
    return sorted(p for p in REGISTRY.rglob(pattern) if p.is_file())


def version_seeds():
    versions = sorted({p.parent.name for p in registry_files("MODULE.bazel") if "overlay" not in p.parts})
    for v in versions:
        seed("version", v, v)
    seed("version", "three-registry", "\n".join(versions[:3]))
    seed("version", "three-zeros", "1.0\n1.0.0\n01.0")
    seed("version", "three-pre", "1.0-rc-1\n1.0-rc.1\n1.0")
    seed("version", "three-big", "18446744073709551615.0\n2147483648\n1.a")
    seed("version", "three-alpha", "1.0.bcr.1\n1.0.0.bcr.2\n1.0-alpha.beta")


def integrity_seeds():
    for p in registry_files("source.json"):
        obj = json.loads(p.read_text())
        values = [obj.get("integrity")] + list(obj.get("patches", {}).values()) + list(obj.get("overlay", {}).values())
        for i, v in enumerate(x for x in values if x):
            seed("integrity", f"{slug(p.parent.relative_to(REGISTRY))}-{i}", v)
    import hashlib

    for alg in ("sha256", "sha384", "sha512"):
        digest = hashlib.new(alg, b"gf-registry").digest()
        b64 = base64.b64encode(digest).decode()
        seed("integrity", f"{alg}-padded", f"{alg}-{b64}")
        seed("integrity", f"{alg}-unpadded", f"{alg}-{b64.rstrip('=')}")


def registry_json_seeds():
    for p in registry_files("*.json"):
        seed("registry_json", slug(p.relative_to(REGISTRY)), p.read_bytes())
    seed(
        "registry_json",
        "metadata-spec",
        json.dumps(
            {
                "homepage": "https://example.com/foo",
                "maintainers": [{"name": "A. Person", "email": "a@example.com"}],
                "repository": ["github:example/foo"],
            }
        ),
    )
    seed(
        "registry_json",
        "metadata-yanked-deprecated",
        json.dumps(
            {
                "versions": ["1.0", "1.0-rc1", "01.0", "1.10", "x y", 5],
                "yanked_versions": {"1.0": "CVE-1"},
                "deprecated": "use bar",
            }
        ),
    )


def module_file_seeds():
    for p in registry_files("MODULE.bazel"):
        seed("module_file", slug(p.relative_to(REGISTRY)), p.read_bytes())
    seed(
        "module_file",
        "full",
        'module(\n    name = "app",\n    version = "1.0",\n    compatibility_level = 1,\n'
        '    bazel_compatibility = [">=7.2.1"],\n)\n\nbazel_dep(name = "a", version = "1.0")\n'
        'bazel_dep(name = "b", version = "2.0", dev_dependency = True)\n'
        'x = use_extension("//:e.bzl", "e")\nuse_repo(x, "r")\n',
    )


def registry_path_seeds():
    for p in sorted(REGISTRY.rglob("*")):
        if p.is_file():
            rel = p.relative_to(REGISTRY)
            seed("registry_path", slug(rel), "/" + str(rel))
    for i, s in enumerate(
        [
            "/modules/zlib/1.0%2Drc1/source.json",
            "/modules/z/1/BUILD.bazel",
            "/modules/z/1/overlay/src/BUILD.bazel",
            "/modules/zlib/1.0/overlay/%2e%2e/x",
            "/modules/zlib/1.0/patches/a%2fb.patch",
        ]
    ):
        seed("registry_path", f"handmade-{i}", s)


def policy_seeds():
    toml_text = (REPO / "mirror-policy" / "policy.toml").read_bytes()
    cands = (REPO / "mirror-policy" / "candidates.json").read_bytes()
    seed("policy", "repo-policy", toml_text + b"\0" + cands)
    candidates = [
        {
            "name": "hello_lib",
            "urls": ["https://github.com/example/hello_lib-1.1.0.tar.gz", "http://mirror.example/x"],
            "integrity": "sha256-EeyNk6wddzuXC3nG6F5DFapaOHrqPIW71CzPyPqbGkA=",
            "required": True,
        }
    ]
    small = (
        '[[upstream]]\nprefix = "https://github.com/"\n[[upstream]]\nprefix = "http://10.0.0.1:8080/a/"\n'
        "allow_private = true\n[retention]\ncached_max_bytes = \"512MB\"\ncached_max_age = \"12h\"\n"
        '[limits]\nmax_blob_bytes = "1TiB"\n'
    )
    seed("policy", "small-with-candidate", small.encode() + b"\0" + json.dumps(candidates).encode())
    seed("policy", "sizes", "20GiB\n512 MB\n7\n30d\n90s\n2w\n18446744073709551615TiB")


def tar_bytes(members, fmt=tarfile.GNU_FORMAT):
    """members: list of (TarInfo, bytes or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def ti(name, kind=tarfile.REGTYPE, linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = 0
    return info


def compress(kind, raw):
    if kind in ("tar.gz", "tgz"):
        import gzip

        return gzip.compress(raw, mtime=0)
    if kind == "tar":
        return raw
    tool = {"tar.xz": ["xz", "-c"], "tar.zst": ["zstd", "-q", "-c"], "tar.bz2": ["bzip2", "-c"]}[kind]
    return subprocess.run(tool, input=raw, stdout=subprocess.PIPE, check=True).stdout


def selector(kind, prefix):
    return bytes([TYPES.index(kind) | (PREFIXES.index(prefix) << 3)])


def archive_seeds():
    for p in sorted(ARCHIVES.glob("*.tar.gz")):
        seed("archive", p.name, selector("tar.gz", "") + p.read_bytes())
    # hello_lib 1.1.0 repacked under pkg/ in every other format, extracted with strip_prefix pkg.
    import gzip

    with tarfile.open(ARCHIVES / "hello_lib-1.1.0.tar.gz") as src:
        files = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
    members = []
    for m, data in files:
        rest = m.name.split("/", 1)[1] if "/" in m.name else ""
        members.append((ti("pkg/" + rest if rest else "pkg/", m.type, mode=m.mode), data))
    members.append((ti("pkg/sub/", tarfile.DIRTYPE, mode=0o755), None))
    members.append((ti("pkg/run.sh", mode=0o755), b"#!/bin/sh\necho hi\n"))
    raw = tar_bytes(members)
    for kind in ("tar", "tar.xz", "tar.zst", "tar.bz2", "tgz"):
        seed("archive", f"hello_lib-pkg.{kind}", selector(kind, "pkg") + compress(kind, raw))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        for m, data in members:
            if m.type == tarfile.DIRTYPE:
                zf.writestr(zipfile.ZipInfo(m.name), b"")
            elif data is not None:
                zi = zipfile.ZipInfo(m.name)
                zi.external_attr = (0o100000 | m.mode) << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(zi, data)
        link = zipfile.ZipInfo("pkg/link")
        link.external_attr = (0o120777) << 16
        zf.writestr(link, b"BUILD.bazel")
    seed("archive", "hello_lib-pkg.zip", selector("zip", "pkg") + zbuf.getvalue())

    # Links, inside and (refused) outside, for the fuzzer to mutate.
    hostile = [
        [
            (ti("pkg/", tarfile.DIRTYPE, mode=0o755), None),
            (ti("pkg/a.txt"), b"a\n"),
            (ti("pkg/sub/", tarfile.DIRTYPE, mode=0o755), None),
            (ti("pkg/sub/up", tarfile.SYMTYPE, "../a.txt"), None),
            (ti("pkg/sub/dir", tarfile.SYMTYPE, ".."), None),
            (ti("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"), None),
        ],
        [
            (ti("pkg/link", tarfile.SYMTYPE, "sub"), None),
            (ti("pkg/sub/", tarfile.DIRTYPE, mode=0o755), None),
            (ti("pkg/sub/x", tarfile.SYMTYPE, "../../../escape"), None),
        ],
        [
            (ti("pkg/ok"), b"ok\n"),
            (ti("pkg/../evil"), b"evil\n"),
            (ti("/abs"), b"abs\n"),
        ],
        [
            (ti("pkg/d", tarfile.SYMTYPE, "."), None),
            (ti("pkg/d/d/d/f"), b"through a link\n"),
            (ti("pkg/fifo", tarfile.FIFOTYPE), None),
        ],
    ]
    for i, members in enumerate(hostile):
        raw = tar_bytes(members)
        seed("archive", f"links-{i}.tar", selector("tar", "pkg") + raw)
        seed("archive", f"links-{i}.tar.gz", selector("tar.gz", "") + compress("tar.gz", raw))
    pax = tar_bytes([(ti("pkg/" + "n" * 150 + "/long.txt"), b"long name\n")], fmt=tarfile.PAX_FORMAT)
    seed("archive", "pax-long-name.tar", selector("tar", "pkg") + pax)


def patch_seeds():
    for p in registry_files("*.patch"):
        seed("patch", p.name, b"\x01" + p.read_bytes())
    handmade = {
        "git-rename-mode": "diff --git a/hello.cc b/src/hello.cc\nsimilarity index 90%\n"
        "rename from hello.cc\nrename to src/hello.cc\n"
        "--- a/hello.cc\n+++ b/src/hello.cc\n@@ -1,3 +1,3 @@\n-#include \"hello_lib/hello.h\"\n"
        "+#include \"hello.h\"\n \n namespace hello {\n"
        "diff --git a/tools/run.sh b/tools/run.sh\nold mode 100755\nnew mode 100644\n",
        "git-new-delete-copy": "diff --git a/new.txt b/new.txt\nnew file mode 100755\n--- /dev/null\n"
        "+++ b/new.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n"
        "diff --git a/tools/run.sh b/tools/run.sh\ndeleted file mode 100755\n--- a/tools/run.sh\n"
        "+++ /dev/null\n@@ -1,2 +0,0 @@\n-#!/bin/sh\n-echo run\n"
        "diff --git a/MODULE.bazel b/MODULE2.bazel\ncopy from MODULE.bazel\ncopy to MODULE2.bazel\n",
        "no-newline": "--- a/src/util.h\n+++ b/src/util.h\n@@ -2,3 +2,3 @@\n \n int util();\n"
        "-// end\n\\ No newline at end of file\n+// end\n",
        "offset-hunk": "--- a/BUILD.bazel\n+++ b/BUILD.bazel\n@@ -20,3 +20,3 @@ cc_test(\n"
        "     size = \"small\",\n-    srcs = [\"hello_test.cc\"],\n+    srcs = [\"hello_test.cc\", \"more.cc\"],\n"
        "     deps = [\":hello_lib\"],\n",
        "through-symlink": "--- a/escape/secret.txt\n+++ b/escape/secret.txt\n@@ -1 +1 @@\n"
        "-outside the tree\n+patched\n--- a/escape_file\n+++ b/escape_file\n@@ -1 +1 @@\n"
        "-outside the tree\n+patched\n",
        "empty-file": "--- a/empty.txt\n+++ b/empty.txt\n@@ -0,0 +1 @@\n+now with content\n",
    }
    for name, text in handmade.items():
        seed("patch", name, b"\x01" + text.encode())


def publish_request_seeds():
    src = json.loads((REGISTRY / "modules/hello_lib/1.1.0.bcr.1/source.json").read_text())
    patches = [
        {"name": p.name, "content": p.read_text()}
        for p in registry_files("*.patch")
    ]
    base = {
        "module_bazel": 'module(name = "foo", version = "1.0", compatibility_level = 1,'
        ' bazel_compatibility = [">=7.2.1"])\n'
        'bazel_dep(name = "hello_lib", version = "1.1.0.bcr.1")\n',
        "source": {"type": "archive", "url": src["url"], "integrity": src["integrity"]},
        "strip_prefix": src["strip_prefix"],
        "archive_type": "tar.gz",
        "patches": patches,
        "patch_strip": 1,
        "overlay": [
            {"path": "BUILD.bazel", "content": "# overlay\n"},
            {"path": "src/BUILD.bazel", "content": "# overlay\n"},
        ],
        "metadata": {
            "homepage": "https://example.com/foo",
            "maintainers": [{"name": "A. Person", "email": "a@example.com"}],
            "repository": ["github:example/foo"],
        },
    }
    seed("publish_request", "archive", json.dumps(base, indent=2))
    upload = dict(base)
    upload["source"] = {
        "type": "upload",
        "file_name": "foo-1.0.tar.gz",
        "content_base64": base64.b64encode((ARCHIVES / "hello_lib-1.0.0.tar.gz").read_bytes()).decode(),
    }
    del upload["archive_type"]
    seed("publish_request", "upload", json.dumps(upload))
    git = {
        "module_bazel": 'module(name = "foo", version = "1.0")\n',
        "source": {"type": "git_repository", "remote": "https://github.com/example/foo.git", "commit": "0" * 40},
    }
    seed("publish_request", "git", json.dumps(git))


def auth_header_seeds():
    seed("auth_header", "bearer", "Bearer gfr_0123456789abcdef")
    seed("auth_header", "basic", "Basic " + base64.b64encode(b"user:gfr_0123456789abcdef").decode())
    seed("auth_header", "basic-unpadded", "basic " + base64.b64encode(b"u:tok:with:colons").decode().rstrip("="))
    seed(
        "auth_header",
        "config",
        "[auth]\nrequire_token_for_reads = true\n\n[[auth.tokens]]\nname = \"ci\"\n"
        'sha256 = "' + "a" * 64 + '"\nscopes = ["publish:rules_*", "yank:rules_go"]\n\n'
        '[[auth.tokens]]\nname = "root"\nsha256 = "' + "b" * 64 + '"\nscopes = ["admin"]\n'
        'expires = 2027-01-01T00:00:00Z\n\n[[auth.tokens]]\nname = "old"\nsha256 = "' + "c" * 64
        + '"\nscopes = ["publish:*"]\nexpires = "2026-06-01T12:00:00Z"\n',
    )
    seed("auth_header", "snippet", "ci-bot\npublish:rules_*,yank:foo?bar,admin\ngfr_token with \"quotes\"")


def main():
    version_seeds()
    integrity_seeds()
    registry_json_seeds()
    module_file_seeds()
    registry_path_seeds()
    policy_seeds()
    archive_seeds()
    patch_seeds()
    publish_request_seeds()
    auth_header_seeds()


if __name__ == "__main__":
    main()
