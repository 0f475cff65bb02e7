#!/usr/bin/env python3
"""Generate a deterministic Bzlmod registry tree for the benchmarks.

Layout (what Bazel and `gf-registry registry check` expect):

    OUT/bazel_registry.json
    OUT/modules/<name>/metadata.json
    OUT/modules/<name>/<version>/MODULE.bazel   (~300-600 bytes, a few bazel_dep lines)
    OUT/modules/<name>/<version>/source.json    (~300 bytes: url, integrity, strip_prefix)

Versions are listed in metadata.json in Bazel's order. Everything derives from --seed, so
the same arguments always produce byte-identical trees.

Also writes path lists for the wrk Lua script (one URL path per line, shuffled):
    --paths FILE     MODULE.bazel and source.json of every version (the hot path)
    --missing FILE   /modules/nonexistent_N/1.0.0/MODULE.bazel for N < --missing-count

Versions per module: --versions V, or --versions A-B to alternate A, A+1, ..., B over the
modules (e.g. 5,000 modules with 4-5 versions is exactly 50,000 files).
"""

import argparse
import base64
import hashlib
import json
import os
import random
import sys

WORDS = (
    "abseil apple arrow bazel boost brotli bzip cares crc curl date double eigen expat "
    "fmt flat gflags glog grpc gtest harfbuzz icu jpeg json libpng lz lzma mbed nasm "
    "opencv openssl pcre proto pybind re rules snappy sqlite tcmalloc tinyxml upb utf "
    "xxhash yaml zlib zstd"
).split()


def module_name(i: int) -> str:
    # Bazel's grammar: [a-z]([a-z0-9._-]*[a-z0-9])?
    return f"{WORDS[i % len(WORDS)]}_{i:05d}"


def versions_for(rng: random.Random, n: int) -> list[str]:
    """n distinct X.Y.Z versions, in Bazel's (numeric) order."""
    seen = set()
    while len(seen) < n:
        seen.add((rng.randint(0, 4), rng.randint(0, 20), rng.randint(0, 9)))
    return [".".join(map(str, v)) for v in sorted(seen)]


def module_bazel(rng: random.Random, name: str, version: str, n_modules: int) -> str:
    lines = [
        "module(",
        f'    name = "{name}",',
        f'    version = "{version}",',
        "    compatibility_level = %d," % rng.randint(0, 2),
        '    bazel_compatibility = [">=7.2.1"],',
        ")",
        "",
    ]
    for _ in range(rng.randint(1, 4)):
        dep = module_name(rng.randrange(n_modules))
        if dep == name:
            continue
        dv = f"{rng.randint(0, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
        lines.append(f'bazel_dep(name = "{dep}", version = "{dv}")')
    lines.append('bazel_dep(name = "platforms", version = "0.0.10")')
    lines.append('bazel_dep(name = "rules_cc", version = "0.0.17", dev_dependency = True)')
    lines.append("")
    lines.append('cc = use_extension("@rules_cc//cc:extensions.bzl", "cc_configure_extension")')
    lines.append('use_repo(cc, "local_config_cc")')
    return "\n".join(lines) + "\n"


def source_json(rng: random.Random, name: str, version: str) -> str:
    digest = hashlib.sha256(rng.randbytes(32)).digest()
    doc = {
        "url": f"https://github.com/bench-org/{name}/releases/download/v{version}/{name}-{version}.tar.gz",
        "integrity": "sha256-" + base64.b64encode(digest).decode(),
        "strip_prefix": f"{name}-{version}",
        "archive_type": "tar.gz",
        "patch_strip": 1,
        "patches": {},
    }
    return json.dumps(doc, indent=4) + "\n"


def metadata_json(name: str, versions: list[str]) -> str:
    doc = {
        "homepage": f"https://github.com/bench-org/{name}",
        "maintainers": [{"email": f"{name}@example.com", "name": f"{name} maintainers"}],
        "repository": [f"github:bench-org/{name}"],
        "versions": versions,
        "yanked_versions": {},
    }
    return json.dumps(doc, indent=4) + "\n"


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="registry root to create (must not exist)")
    ap.add_argument("--modules", type=int, default=1000)
    ap.add_argument("--versions", default="5", help="V, or A-B to alternate A..B")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--paths", help="write the hot-path list here")
    ap.add_argument("--missing", help="write the unknown-module path list here")
    ap.add_argument("--missing-count", type=int, default=10000)
    a = ap.parse_args()

    lo, _, hi = a.versions.partition("-")
    vrange = list(range(int(lo), int(hi or lo) + 1))
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.out, "modules"))
    write(os.path.join(a.out, "bazel_registry.json"), '{\n    "mirrors": []\n}\n')

    paths, files = [], 1
    for i in range(a.modules):
        name = module_name(i)
        mdir = os.path.join(a.out, "modules", name)
        versions = versions_for(rng, vrange[i % len(vrange)])
        os.makedirs(mdir)
        write(os.path.join(mdir, "metadata.json"), metadata_json(name, versions))
        files += 1
        for v in versions:
            vdir = os.path.join(mdir, v)
            os.makedirs(vdir)
            write(os.path.join(vdir, "MODULE.bazel"), module_bazel(rng, name, v, a.modules))
            write(os.path.join(vdir, "source.json"), source_json(rng, name, v))
            files += 2
            paths.append(f"/modules/{name}/{v}/MODULE.bazel")
            paths.append(f"/modules/{name}/{v}/source.json")

    # Shuffle so consecutive requests hit different modules (as a resolving Bazel does).
    random.Random(a.seed + 1).shuffle(paths)
    if a.paths:
        write(a.paths, "\n".join(paths) + "\n")
    if a.missing:
        missing = [f"/modules/nonexistent_{n}/1.0.0/MODULE.bazel" for n in range(a.missing_count)]
        write(a.missing, "\n".join(missing) + "\n")
    print(f"{a.out}: {a.modules} modules, {len(paths) // 2} versions, {files} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
