#!/usr/bin/env python3
"""A second, independent gRPC client for the Remote Asset door: grpcio (gRPC's C core) from
PyPI, run by tests/it/remote_asset.rs. It covers what Bazel 4.2.3 does not send: SRI lists,
http_header qualifiers, an unknown qualifier, read_offset/read_limit, and concurrent FetchBlob
calls of one URL.

The few messages it needs are described here with protobuf's descriptor API (their field
numbers are those of remote_asset.proto, remote_execution.proto and bytestream.proto), so no
.proto file or code generation is needed.

    remote_asset.py SERVER_HOST:PORT URI SIZE SRI_SHA256 SRI_SHA384 OTHER_SRI

prints one JSON object with what each call returned; the Rust test checks it.
"""

import concurrent.futures
import json
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _messages():
    file = descriptor_pb2.FileDescriptorProto(name="gf_test_remote.proto", package="gftest")

    def message(name, *fields):
        m = file.message_type.add(name=name)
        for number, field_name, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = ".gftest." + type_name

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Digest", (1, "hash", F.TYPE_STRING, one, None), (2, "size_bytes", F.TYPE_INT64, one, None))
    message("Status", (1, "code", F.TYPE_INT32, one, None), (2, "message", F.TYPE_STRING, one, None))
    message("Qualifier", (1, "name", F.TYPE_STRING, one, None), (2, "value", F.TYPE_STRING, one, None))
    message(
        "FetchBlobRequest",
        (1, "instance_name", F.TYPE_STRING, one, None),
        (4, "uris", F.TYPE_STRING, many, None),
        (5, "qualifiers", F.TYPE_MESSAGE, many, "Qualifier"),
    )
    message(
        "FetchBlobResponse",
        (1, "status", F.TYPE_MESSAGE, one, "Status"),
        (2, "uri", F.TYPE_STRING, one, None),
        (3, "qualifiers", F.TYPE_MESSAGE, many, "Qualifier"),
        (5, "blob_digest", F.TYPE_MESSAGE, one, "Digest"),
    )
    message(
        "ReadRequest",
        (1, "resource_name", F.TYPE_STRING, one, None),
        (2, "read_offset", F.TYPE_INT64, one, None),
        (3, "read_limit", F.TYPE_INT64, one, None),
    )
    message("ReadResponse", (10, "data", F.TYPE_BYTES, one, None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName("gftest." + name))
        for name in ["Digest", "Qualifier", "FetchBlobRequest", "FetchBlobResponse", "ReadRequest", "ReadResponse"]
    }


M = _messages()


def main():
    target, uri, size, sri256, sri384, other = sys.argv[1:7]
    size = int(size)
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    fetch_blob = channel.unary_unary(
        "/build.bazel.remote.asset.v1.Fetch/FetchBlob",
        request_serializer=M["FetchBlobRequest"].SerializeToString,
        response_deserializer=M["FetchBlobResponse"].FromString,
    )
    read = channel.unary_stream(
        "/google.bytestream.ByteStream/Read",
        request_serializer=M["ReadRequest"].SerializeToString,
        response_deserializer=M["ReadResponse"].FromString,
    )

    def fetch(qualifiers, uris=(uri,)):
        req = M["FetchBlobRequest"](uris=list(uris))
        for name, value in qualifiers:
            req.qualifiers.add(name=name, value=value)
        try:
            resp = fetch_blob(req, timeout=60)
        except grpc.RpcError as e:
            return {"code": e.code().name, "message": e.details()}
        return {
            "code": "OK",
            "status_set": resp.HasField("status"),
            "uri": resp.uri,
            "hash": resp.blob_digest.hash,
            "size": resp.blob_digest.size_bytes,
            "qualifiers": sorted(q.name for q in resp.qualifiers),
        }

    out = {}
    # Concurrent FetchBlob of one URL, the first contact with it: one upstream fetch.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        out["concurrent"] = list(pool.map(lambda _: fetch([("checksum.sri", sri256)]), range(8)))
    # An SRI list where only the second entry matches, with header qualifiers along.
    out["sri_list"] = fetch(
        [
            ("checksum.sri", f"{other} {sri384}"),
            ("http_header:Authorization", "Bearer not-for-logs"),
            ("http_header_url:0:X-Token", "also-secret"),
        ]
    )
    out["no_match"] = fetch([("checksum.sri", other)])
    out["unknown_qualifier"] = fetch([("resource_type", "application/x-tar")])

    digest = out["concurrent"][0]["hash"]

    def read_range(offset, limit):
        req = M["ReadRequest"](resource_name=f"blobs/{digest}/{size}", read_offset=offset, read_limit=limit)
        try:
            return {"code": "OK", "data": b"".join(r.data for r in read(req, timeout=60)).hex()}
        except grpc.RpcError as e:
            return {"code": e.code().name, "message": e.details()}

    out["read_middle"] = read_range(1000, 16)
    out["read_tail"] = read_range(size - 5, 0)
    out["read_past_end"] = read_range(size + 1, 0)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
