"""The wire schema (proto/): generated modules fresh and importable, numbering as the engine's.

The freshness test regenerates proto/ with the pinned grpcio-tools and compares; it is skipped
only where grpc_tools cannot be imported (it is in the `test` extra, so CI runs it).
"""

from __future__ import annotations

import importlib
import importlib.resources
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from durakv._backend import Op
from durakv._errors import KVStatus
from durakv.engine.durability import Level
from durakv.engine.errors import Status
from durakv.proto import admin_pb2, cluster_pb2, kv_pb2, kv_pb2_grpc, replication_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO_FILES = ("admin", "cluster", "kv", "replication")
CAS_MAX = 2**64 - 1


def generated_modules() -> list[str]:
    return sorted(p.stem for p in PROTO_DIR.glob("*_pb2*.py"))


def test_generated_modules_are_fresh():
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proto_has_its_generated_modules():
    protos = sorted(p.stem for p in PROTO_DIR.glob("*.proto"))
    assert set(PROTO_FILES) <= set(protos)
    expected = []
    for name in protos:
        module = importlib.import_module(f"durakv.proto.{name}_pb2")
        assert (PROTO_DIR / f"{name}_pb2.pyi").is_file(), name
        expected.append(f"{name}_pb2")
        if module.DESCRIPTOR.services_by_name:  # a _pb2_grpc module only where there is a service
            expected.append(f"{name}_pb2_grpc")
    assert generated_modules() == sorted(expected)


@pytest.mark.parametrize("name", generated_modules())
def test_generated_modules_import_as_durakv_proto(name):
    module = importlib.import_module(f"durakv.proto.{name}")
    assert module.__name__ == f"durakv.proto.{name}"
    text = (PROTO_DIR / f"{name}.py").read_text(encoding="utf-8")
    # Sibling modules are imported through the package, never as top-level modules.
    assert not re.search(r"^(?:import|from)\s+\w+_pb2", text, re.MULTILINE)
    for imported in re.findall(r"^from durakv\.proto import (\w+) as (\w+)$", text, re.MULTILINE):
        assert getattr(module, imported[1]) is importlib.import_module(f"durakv.proto.{imported[0]}")
    if name.endswith("_pb2"):
        # Registered in the process-wide descriptor pool under a package-qualified name.
        assert module.DESCRIPTOR.name == f"durakv/proto/{name.removesuffix('_pb2')}.proto"
        assert module.DESCRIPTOR.package == f"durakv.{name.removesuffix('_pb2')}.v1"


def test_proto_sources_ship_in_the_package():
    files = importlib.resources.files("durakv.proto")
    for name in PROTO_FILES:
        assert files.joinpath(f"{name}.proto").is_file()


# -- numbering shared with the engine and the SDK ------------------------------------------------


def test_status_values_equal_the_engine_status():
    wire = dict(kv_pb2.Status.items())
    assert wire["SUCCESS"] == 0
    # Every engine status can travel, under its own name and number, and nothing else can.
    assert wire == {status.name: status.value for status in Status}


def test_status_values_equal_the_sdk_table():
    assert dict(kv_pb2.Status.items()) == {status.name: status.value for status in KVStatus}


def test_couchbase_status_numbers():
    # Spot checks against Couchbase's status.h (reference §1.8, §2.9).
    s = kv_pb2.Status
    assert (s.KEY_ENOENT, s.KEY_EEXISTS, s.NOT_MY_VBUCKET, s.LOCKED, s.TMPFAIL) == (0x01, 0x02, 0x07, 0x09, 0x86)
    assert (s.DURABILITY_IMPOSSIBLE, s.SYNC_WRITE_AMBIGUOUS, s.SYNC_WRITE_RECOMMIT_IN_PROGRESS) == (0xA1, 0xA3, 0xA4)


def test_durability_levels_equal_the_engine_levels():
    wire = {name.removeprefix("DURABILITY_LEVEL_"): value for name, value in cluster_pb2.DurabilityLevel.items()}
    assert wire == {level.name: level.value for level in Level}


def test_stream_end_reasons_are_couchbases():
    reasons = {n.removeprefix("STREAM_END_REASON_"): v for n, v in replication_pb2.StreamEndReason.items()}
    assert reasons == {
        "OK": 0,
        "CLOSED": 1,
        "STATE_CHANGED": 2,
        "DISCONNECTED": 3,
        "TOO_SLOW": 4,
        "BACKFILL_FAILED": 5,
        "ROLLBACK": 6,
        "FILTER_EMPTY": 7,
        "LOST_PRIVILEGES": 8,
    }


# -- the KV service covers the embedded API ----------------------------------------------------


def _kv_methods():
    return {m.name: m for m in kv_pb2.DESCRIPTOR.services_by_name["KV"].methods}


def test_every_sdk_operation_has_an_rpc():
    methods = _kv_methods()
    for op in Op:
        rpc = "GetReplica" if op in (Op.GET_ANY_REPLICA, Op.GET_ALL_REPLICAS) else op.name.title().replace("_", "")
        assert rpc in methods, op
        assert not methods[rpc].client_streaming and not methods[rpc].server_streaming
    assert "ObserveSeqno" in methods
    assert methods["Pipeline"].client_streaming and methods["Pipeline"].server_streaming
    batched = methods["PipelineBatched"]
    assert batched.client_streaming and batched.server_streaming
    assert (batched.input_type.name, batched.output_type.name) == ("OpRequestBatch", "OpResponseBatch")
    for message, item in ((kv_pb2.OpRequestBatch, kv_pb2.OpRequest), (kv_pb2.OpResponseBatch, kv_pb2.OpResponse)):
        (ops,) = message.DESCRIPTOR.fields
        assert (ops.name, ops.number, ops.message_type, ops.is_repeated) == ("ops", 1, item.DESCRIPTOR, True)


def test_batch_items_mirror_the_unary_rpcs():
    """Each unary RPC is one OpRequest/OpResponse field, with the same number on both sides."""
    requests = {f.name: f for f in kv_pb2.OpRequest.DESCRIPTOR.oneofs_by_name["op"].fields}
    responses = {f.name: f for f in kv_pb2.OpResponse.DESCRIPTOR.oneofs_by_name["op"].fields}
    assert requests.keys() == responses.keys()
    unary = {n: m for n, m in _kv_methods().items() if n not in ("Batch", "Pipeline", "PipelineBatched")}
    assert len(unary) == len(requests)
    for name, method in unary.items():
        field = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
        assert requests[field].message_type is method.input_type, name
        assert responses[field].message_type is method.output_type, name
        assert requests[field].number == responses[field].number, name


def test_services_have_their_rpcs():
    admin = {m.name for m in admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods}
    assert {
        "GetClusterConfig",
        "CreateBucket",
        "DropBucket",
        "GetBucket",
        "ListBuckets",
        "CreateScope",
        "DropScope",
        "CreateCollection",
        "DropCollection",
        "GetCollectionsManifest",
        "CreateUser",
        "DropUser",
        "ListUsers",
        "Stats",
        "Health",
    } <= admin
    control = {m.name for m in admin_pb2.DESCRIPTOR.services_by_name["NodeControl"].methods}
    assert "PushConfig" in control
    replication = replication_pb2.DESCRIPTOR.services_by_name["Replication"].methods
    assert [(m.name, m.client_streaming, m.server_streaming) for m in replication] == [
        ("Stream", True, True),
        ("StreamBatched", True, True),
    ]
    assert callable(kv_pb2_grpc.KVStub) and callable(kv_pb2_grpc.add_KVServicer_to_server)


# -- round trips -------------------------------------------------------------------------------


def _round_trip(message):
    parsed = type(message).FromString(message.SerializeToString())
    assert parsed == message
    return parsed


def _header(key: bytes = b"k\x00\xff", vbucket: int = 7) -> kv_pb2.RequestHeader:
    return kv_pb2.RequestHeader(
        bucket="default",
        scope="inventory",
        collection="airline",
        key=key,
        vbucket=vbucket,
        timeout_ms=2500,
        config_epoch=1,
        config_revision=42,
    )


def test_round_trip_mutation_request_and_response():
    request = _round_trip(
        kv_pb2.ReplaceRequest(
            header=_header(),
            value=b'{"a":1}\x00\xfe',
            flags=0x02000006,
            cas=CAS_MAX,
            expiry=2**32 + 5,  # refused by the node (EINVAL), but it must travel
            preserve_expiry=True,
            durability_level=cluster_pb2.DURABILITY_LEVEL_PERSIST_TO_MAJORITY,
            durability_timeout_ms=9000,
        )
    )
    assert request.header.key == b"k\x00\xff" and request.cas == CAS_MAX and request.expiry == 2**32 + 5
    config = cluster_pb2.ClusterConfig(
        epoch=1,
        revision=43,
        cluster_uuid="c1",
        nodes=[cluster_pb2.Node(node_id="n1", address="127.0.0.1:7101", state=cluster_pb2.NODE_STATE_ACTIVE)],
        buckets=[
            cluster_pb2.BucketConfig(
                settings=cluster_pb2.BucketSettings(name="default", num_vbuckets=2, num_replicas=1),
                uuid="b1",
                vbucket_map=[cluster_pb2.VBucketChain(nodes=[0, -1]), cluster_pb2.VBucketChain(nodes=[-1, 0])],
                manifest_uid=3,
            )
        ],
    )
    response = _round_trip(kv_pb2.MutationResponse(status=kv_pb2.NOT_MY_VBUCKET, message="not active", config=config))
    assert response.status == Status.NOT_MY_VBUCKET
    assert list(response.config.buckets[0].vbucket_map[1].nodes) == [-1, 0]
    assert not response.config.buckets[0].HasField("manifest")
    assert not kv_pb2.MutationResponse(status=kv_pb2.SUCCESS).HasField("config")


def test_counter_initial_has_presence():
    absent = _round_trip(kv_pb2.IncrementRequest(header=_header(), delta=CAS_MAX))
    assert not absent.HasField("initial")  # do not create
    zero = _round_trip(kv_pb2.DecrementRequest(header=_header(), delta=1, initial=0))
    assert zero.HasField("initial") and zero.initial == 0


def test_round_trip_batch_keeps_order_and_kinds():
    batch = _round_trip(
        kv_pb2.BatchRequest(
            ops=[
                kv_pb2.OpRequest(opaque=1, insert=kv_pb2.InsertRequest(header=_header(), value=b"v")),
                kv_pb2.OpRequest(opaque=2, get=kv_pb2.GetRequest(header=_header())),
                kv_pb2.OpRequest(opaque=3, observe_seqno=kv_pb2.ObserveSeqnoRequest(bucket="default", vbucket=7)),
            ]
        )
    )
    assert [(op.opaque, op.WhichOneof("op")) for op in batch.ops] == [(1, "insert"), (2, "get"), (3, "observe_seqno")]
    answers = _round_trip(
        kv_pb2.BatchResponse(
            ops=[
                kv_pb2.OpResponse(opaque=1, insert=kv_pb2.MutationResponse(cas=5, seqno=9, vbucket=7, vbucket_uuid=11)),
                kv_pb2.OpResponse(opaque=2, get=kv_pb2.GetResponse(status=kv_pb2.KEY_ENOENT)),
                kv_pb2.OpResponse(opaque=3, status=kv_pb2.NOT_SUPPORTED, message="unknown operation"),
            ]
        )
    )
    assert [op.WhichOneof("op") for op in answers.ops] == ["insert", "get", None]
    assert answers.ops[2].status == Status.NOT_SUPPORTED


def test_round_trip_replication_messages():
    batch = replication_pb2.ProducerMessage(
        item_batch=replication_pb2.ItemBatch(
            vbucket=3,
            items=[
                replication_pb2.Item(
                    prepare=replication_pb2.Prepare(
                        collection_id=8,
                        key=b"k",
                        seqno=10,
                        rev_seqno=2,
                        cas=CAS_MAX,
                        value=b"v",
                        level=cluster_pb2.DURABILITY_LEVEL_MAJORITY,
                    )
                ),
                replication_pb2.Item(
                    commit=replication_pb2.Commit(collection_id=8, key=b"k", prepared_seqno=10, commit_seqno=11)
                ),
                replication_pb2.Item(seqno_advanced=replication_pb2.SeqnoAdvanced(seqno=12)),
            ],
        )
    )
    parsed = _round_trip(batch)
    assert parsed.WhichOneof("message") == "item_batch"
    assert [i.WhichOneof("item") for i in parsed.item_batch.items] == ["prepare", "commit", "seqno_advanced"]
    response = _round_trip(
        replication_pb2.ProducerMessage(
            stream_response=replication_pb2.StreamResponse(
                vbucket=3,
                status=kv_pb2.SUCCESS,
                failover_log=[
                    replication_pb2.FailoverEntry(uuid=2**48 - 1, seqno=100),
                    replication_pb2.FailoverEntry(uuid=1, seqno=0),
                ],
            )
        )
    )
    assert [(e.uuid, e.seqno) for e in response.stream_response.failover_log] == [(2**48 - 1, 100), (1, 0)]
    ack = _round_trip(
        replication_pb2.ReplicaMessage(
            seqno_ack=replication_pb2.SeqnoAck(vbucket=3, high_prepared_seqno=10, received_seqno=12, persisted_seqno=9)
        )
    )
    assert ack.WhichOneof("message") == "seqno_ack"


def test_round_trip_push_config():
    push = _round_trip(
        admin_pb2.PushConfigRequest(
            target_node_id="n1",
            config=cluster_pb2.ClusterConfig(epoch=1, revision=7),
            users=[
                cluster_pb2.UserRecord(
                    user=cluster_pb2.User(
                        username="app",
                        roles=[cluster_pb2.Role(name=cluster_pb2.ROLE_NAME_DATA_WRITER, bucket="default")],
                    ),
                    password_hash=cluster_pb2.PasswordHash(
                        algorithm="scrypt", scrypt_n=2**14, scrypt_r=8, scrypt_p=1, salt=b"s" * 16, digest=b"d" * 32
                    ),
                )
            ],
        )
    )
    assert push.users[0].user.roles[0].name == cluster_pb2.ROLE_NAME_DATA_WRITER


# -- dependency floors match the generated code --------------------------------------------------


def _requirement_floor(requirements: list[str], package: str) -> str:
    for requirement in requirements:
        match = re.fullmatch(rf"{re.escape(package)}\s*(?:>=|==)\s*([\w.]+)(?:\s*,.*)?", requirement.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{package} not found in {requirements}")


def test_dependency_floors_match_the_generated_code():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = project["dependencies"]
    tools = _requirement_floor(project["optional-dependencies"]["test"], "grpcio-tools")
    grpc_generated = re.search(
        r"^GRPC_GENERATED_VERSION = '([\w.]+)'$",
        (PROTO_DIR / "kv_pb2_grpc.py").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    protobuf_generated = re.search(
        r"^# Protobuf Python Version: ([\w.]+)$", (PROTO_DIR / "kv_pb2.py").read_text(encoding="utf-8"), re.MULTILINE
    )
    assert grpc_generated and protobuf_generated
    # The generated code refuses a grpcio older than the tools that generated it, and a
    # protobuf runtime older than its gencode version.
    assert _requirement_floor(runtime, "grpcio") == grpc_generated.group(1) == tools
    assert _requirement_floor(runtime, "protobuf") == protobuf_generated.group(1)
