#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests against the Kubernetes JSON schemas, offline.

    kubectl kustomize deploy/kubernetes/overlays/ha > /tmp/ha.yaml
    python3 deploy/kubernetes/validate.py -k 1.30.0 ha=/tmp/ha.yaml

Each document of each file is checked with the PyPI package kubernetes-validate (which ships
the schemas) in strict mode (unknown fields are errors), against every `-k` version (default:
1.30.0 and the newest the package knows). One line per result goes to stderr; stdout gets one
JSON object for tests/it/deploy.rs:

    {"kubernetes_validate": "1.37.0", "versions": ["1.30.0", ...],
     "overlays": {"ha": {"documents": [...], "errors": ["..."]}}}

The documents are the parsed YAML, so the test checks their properties without a YAML parser.
Exit status: 0 when every document is valid, 1 when one is not, 3 when a module is missing.
"""

import argparse
import json
import sys

try:
    import yaml
    import kubernetes_validate
    from kubernetes_validate import utils as kv
except ImportError as e:  # pragma: no cover - reported to the caller
    print(f"missing Python module: {e.name} (pip install kubernetes-validate)", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help="Kubernetes version to validate against (repeatable)")
    parser.add_argument("files", nargs="+", metavar="NAME=FILE",
                        help="a rendered manifest stream, with the name to report it under")
    args = parser.parse_args()
    versions = args.versions or sorted({"1.30.0", kv.latest_version()}, key=kv.Version)

    out = {
        "kubernetes_validate": getattr(kubernetes_validate, "__version__", "unknown"),
        "versions": versions,
        "overlays": {},
    }
    failed = False
    for spec in args.files:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = spec, spec
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
        errors = []
        for doc in documents:
            what = f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            for version in versions:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    where = ".".join(str(p) for p in e.path) or "(document)"
                    errors.append(f"{name}: {what} (Kubernetes {version}): {where}: {e.message}")
                except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as e:
                    errors.append(f"{name}: {what} (Kubernetes {version}): {e}")
        for line in errors:
            print(f"ERROR {line}", file=sys.stderr)
        print(f"{name}: {len(documents)} documents, {len(errors)} errors "
              f"(Kubernetes {', '.join(versions)})", file=sys.stderr)
        failed = failed or bool(errors)
        out["overlays"][name] = {"documents": documents, "errors": errors}
    json.dump(out, sys.stdout, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
