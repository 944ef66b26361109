"""The enterprise's "all data held on it" includes the node's public records (Issue 11 §2.1).

Web layer against an in-memory backend (a "public records at the node"
section, marked public, with source and as-of, in zh and en); the adapter's
mapping of the client's answers; and in process over real mTLS: the
enterprise's own-data view (client, CLI) carries its own public records,
read with its own role (an audited read), and never another enterprise's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient

from xinrong import public
from xinrong.catalog import Catalog
from xinrong.enterprise.client import PUBLIC_SECTION_TITLE, PublicRecordView, SubjectClient
from xinrong.enterprise.portal.app import create_app
from xinrong.enterprise.portal.backend import (
    ActionError,
    DataField,
    Identity,
    MyData,
    NotAvailable,
    ProviderData,
    PublicRow,
)
from xinrong.errors import ValidationError
from xinrong.keys.layout import party_dir
from xinrong.node.server import NodeServer
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError
from xinrong.tools.cli import main as xinrong_main
from xinrong.v1 import public_pb2, public_pb2_grpc

from support.node_fakes import ACME, BETA
from support.platform import real_platform

PORT = 18766  # never bound: the app runs in-process, the number only feeds the Host check
BASE = f"http://127.0.0.1:{PORT}"
PERIOD = "2026-09-30"


# -- the page ------------------------------------------------------------------------------------


@dataclass
class PublicFake:
    """Just enough of a PortalBackend for the data page."""

    public: tuple[PublicRow, ...] | None = ()
    calls: list[str] = field(default_factory=list)

    def identity(self) -> Identity:
        return Identity("91130100MA0EXAMPLE", "127.0.0.1:7443")

    def my_data(self) -> MyData:
        self.calls.append("my_data")
        return MyData(
            (
                ProviderData(
                    "tax",
                    "Tax bureau",
                    "税务局",
                    "tax",
                    "2026-06-30",
                    True,
                    (DataField("tax.credit_grade", "tax credit grade", "A", "normal"),),
                ),
            ),
            (),
            self.public,
        )

    def __getattr__(self, name: str) -> Any:
        raise NotAvailable(name)


ROWS = (
    PublicRow("market.status", "operating status", "in_business", "market", "Market regulation", "市场监管", PERIOD, 3),
    PublicRow("tax.grade_a_taxpayer", "grade A taxpayer", "true", "tax", "Tax bureau", "税务局", "2026-06-30", 1),
)


def _page(backend: PublicFake, lang: str = "") -> str:
    client = TestClient(create_app(backend, port=PORT, secret=b"s" * 32), base_url=BASE)
    response = client.get("/data" + (f"?lang={lang}" if lang else ""))
    assert response.status_code == 200
    return str(response.text)


def test_the_data_page_has_a_public_section_with_source_and_as_of() -> None:
    html = _page(PublicFake(ROWS))
    assert 'id="public-records"' in html and "节点公开信息" in html
    section = html.split('id="public-records"', 1)[1]
    # Every record is marked public, with its source provider and data-as-of.
    assert section.count('data-public="true"') == 2
    assert section.count('class="badge public"') == 3  # the heading's and one per row
    assert "公开" in section and "来源" in section and "数据截至" in section
    assert "市场监管" in section and "税务局" in section
    assert "in_business" in section and PERIOD in section and "2026-06-30" in section
    # The providers' sealed reports stay where they were, above.
    assert html.index('id="provider-tax"') < html.index('id="public-records"')
    en = _page(PublicFake(ROWS), "en").split('id="public-records"', 1)[1]
    assert "Public records at the node" in en and "Market regulation" in en and "Source" in en and "public" in en


def test_the_public_section_says_empty_or_not_served() -> None:
    empty = _page(PublicFake(()), "en").split('id="public-records"', 1)[1]
    assert "The node holds no public record on the enterprise" in empty and "<table>" not in empty
    missing = _page(PublicFake(None), "en").split('id="public-records"', 1)[1]
    assert "This node does not serve public records" in missing
    assert "节点公开信息" in _page(PublicFake(None))


def test_public_values_are_escaped() -> None:
    row = PublicRow("market.status", "", "<script>x</script>", "market", "M", "M", PERIOD, 1)
    html = _page(PublicFake((row,)))
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html


# -- the adapter ---------------------------------------------------------------------------------


class _Creds:
    role = "enterprise"
    party_id = "91130100MA0EXAMPLE"


@dataclass
class _Client:
    public: Any

    def my_data(self) -> tuple[list[object], list[str]]:
        return [], ["judicial"]

    def public_records(self) -> tuple[list[PublicRecordView], int | None]:
        if isinstance(self.public, Exception):
            raise self.public
        return self.public, 5

    def close(self) -> None:
        pass


def _backend(tmp_path: Path, client: Any) -> Any:
    from xinrong.enterprise.portal.adapter import ClientBackend

    backend = ClientBackend("127.0.0.1:1", _Creds(), state_dir=tmp_path)  # type: ignore[arg-type]
    backend._client_obj = client
    return backend


def test_adapter_maps_public_records_and_an_unserved_service(tmp_path: Path) -> None:
    views = [
        PublicRecordView("market", "market.admin_licences", ["A", "B"], PERIOD, 2),
        PublicRecordView("tax", "tax.grade_a_taxpayer", True, "2026-06-30", 1),
    ]
    data = _backend(tmp_path, _Client(views)).my_data()
    assert data.unavailable == ("judicial",)
    assert data.public is not None
    by = {r.field: r for r in data.public}
    assert by["tax.grade_a_taxpayer"].value == "true" and by["tax.grade_a_taxpayer"].as_of == "2026-06-30"
    assert by["market.admin_licences"].value == "A, B" and by["market.admin_licences"].version == 2
    assert by["tax.grade_a_taxpayer"].provider_name_zh != "tax"  # the catalog's display name
    unserved = RemoteError(grpc.StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED", "unknown service")
    assert _backend(tmp_path, _Client(unserved)).my_data().public is None
    refused = RemoteError(grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED", "access denied")
    with pytest.raises(ActionError, match="ACCESS_DENIED"):
        _backend(tmp_path, _Client(refused)).my_data()


# -- in process, over mTLS -----------------------------------------------------------------------

TAX_CSV = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
    f"{ACME},2026-06-30,A,false,false,0.00,734512.37,88231.90,27,,true\n"
    f"{BETA},2026-06-30,C,true,true,51234.11,,,2,,false\n"
)


@pytest.fixture
def platform(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[NodeServer]:
    with real_platform(pki, catalog, tmp_path, {"tax": TAX_CSV}, poll_seconds=0.2) as (node, _agents):
        yield node


def _publish_tax(node: NodeServer, pki: Any) -> None:
    """The tax bureau publishes its one aggregate field: ACME is a grade-A taxpayer, BETA is not."""
    creds = pki.provider("tax")
    batch = public.PublicBatch(
        "tax",
        PERIOD,
        1,
        0,
        (
            public.PublicRecord(ACME, {"tax.grade_a_taxpayer": True}),
            public.PublicRecord(BETA, {"tax.grade_a_taxpayer": False}),
        ),
    )
    raw, sig = public.sign_batch(creds.signing_key, batch)
    channel = secure_channel(f"127.0.0.1:{node.port}", creds, server_role="node", server_id="node")
    try:
        stub = public_pb2_grpc.PublicServiceStub(channel)
        resp = stub.PublishRecords(public_pb2.PublishRecordsRequest(batch=raw, signature=sig), timeout=10)
        assert resp.outcome == public_pb2.PUBLISH_OUTCOME_APPLIED
    finally:
        channel.close()


def test_own_data_has_the_enterprises_own_public_records_only(
    platform: NodeServer, pki: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    node = platform
    address = f"127.0.0.1:{node.port}"
    with SubjectClient(address, pki.enterprise(ACME)) as client:
        before = client.own_data()
        assert before.public == ()  # nothing published yet: empty, not "not served"
        _publish_tax(node, pki)
        own = client.own_data()
    assert [r.provider for r in own.reports] == ["tax"]
    assert own.public == (PublicRecordView("tax", "tax.grade_a_taxpayer", True, PERIOD, 1),)
    with SubjectClient(address, pki.enterprise(BETA)) as client:
        beta = client.own_data()
    assert beta.public == (PublicRecordView("tax", "tax.grade_a_taxpayer", False, PERIOD, 1),)
    # Each read is the enterprise's own audited GetPublicRecords, about itself only.
    rows = node.core.db.query(
        "SELECT caller_role, caller_id, enterprise, decision FROM audit_log WHERE method = ? ORDER BY seq",
        ("GetPublicRecords",),
    )
    assert [tuple(r) for r in rows] == [
        ("enterprise", ACME, ACME, "ALLOWED"),
        ("enterprise", ACME, ACME, "ALLOWED"),
        ("enterprise", BETA, BETA, "ALLOWED"),
    ]
    # The CLI prints the same, in a section marked public, with source and as-of.
    creds_dir = party_dir(pki.root, "enterprise", ACME)
    assert xinrong_main(["enterprise", "data", "--credentials", str(creds_dir), "--node", address, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    section = doc["public_at_node"]
    assert section["title"] == PUBLIC_SECTION_TITLE and section["public"] is True and section["available"] is True
    assert section["records"] == [
        {
            "field": "tax.grade_a_taxpayer",
            "value": True,
            "provider": "tax",
            "as_of": PERIOD,
            "version": 1,
            "public": True,
        }
    ]
    assert [p["provider"] for p in doc["providers"]] == ["tax"]


def test_the_client_refuses_a_private_field_passed_off_as_public(
    platform: NodeServer, pki: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = public_pb2.GetPublicRecordsResponse(
        records=[
            public_pb2.PublicRecord(
                provider="tax", field="tax.vat_paid_last_year", value_json='"734512.37"', as_of=PERIOD, version=1
            )
        ]
    )

    class Stub:
        def __init__(self, channel: object) -> None:
            pass

        def GetPublicRecords(self, request: object, timeout: float) -> object:
            return forged

    monkeypatch.setattr(public_pb2_grpc, "PublicServiceStub", Stub)
    with (
        SubjectClient(f"127.0.0.1:{platform.port}", pki.enterprise(ACME)) as client,
        pytest.raises(ValidationError, match="as a public record"),
    ):
        client.public_records()


def test_the_client_lists_the_node_institutions_it_can_verify(platform: NodeServer, pki: Any) -> None:
    """What the portal's consent form offers as grantees: institutions whose bindings the CA signed."""
    with SubjectClient(f"127.0.0.1:{platform.port}", pki.enterprise(ACME)) as client:
        ids = client.institution_ids()
    assert ids and ids == sorted(ids) and all(i.startswith("bank") for i in ids), ids
