# ruff: noqa: RUF001  (Chinese sample data uses full-width punctuation on purpose)
"""The printable credit report: A4 PDF (zh / en) read back with poppler, and the self-contained, escaped HTML.

The PDF is checked the way a reader sees it: its first page is rasterised with ``pdftoppm`` and its text
extracted with ``pdftotext`` (``make test`` installs poppler-utils through the Makefile's ``pdftools`` target,
and the CJK font through ``browser``). ``XINRONG_REPORT_SCREENSHOTS=DIR`` keeps page 1 of the Chinese and
English reports there as report-zh.png / report-en.png at 100 dpi (docs/screenshots holds the committed ones).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xinrong import uscc
from xinrong.bank import report_render
from xinrong.bank.report_render import (
    DEFAULT_FONT,
    VERIFY_COMMAND,
    ReportFontMissing,
    ReportFontUnusable,
    ReportShapeError,
    render_html,
    render_pdf,
)

USCC = str(uscc.make("9", "1", "130100", "MA0CR7X1"))
REPORT_ID = "cr-0f3c9a1e2b4d4c6f8a0b1c2d3e4f5a6b"
FINGERPRINT = "sha256:4f2a9c1d7e3b5a6f8c0d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b2c4d6e8f0a1b"
COMMITMENT_SHA = "ab12cd34ef56" * 5 + "ab12"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'

POPPLER = all(shutil.which(tool) for tool in ("pdftoppm", "pdftotext", "pdfinfo", "pdffonts"))
needs_poppler = pytest.mark.skipif(
    not POPPLER, reason="poppler's pdftoppm/pdftotext are missing: run `make pdftools` as root (poppler-utils)"
)
needs_font = pytest.mark.skipif(
    not DEFAULT_FONT.is_file(), reason=f"{DEFAULT_FONT} is missing: run `make browser` as root (fonts-wqy-microhei)"
)


def _item(
    field: str,
    label_zh: str,
    label_en: str,
    value: Any,
    source: str,
    source_zh: str,
    source_en: str,
    *,
    display_zh: str | None = None,
    display_en: str | None = None,
    self_reported: bool = False,
    as_of: str = "2026-11-30",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "field": field,
        "label_zh": label_zh,
        "label_en": label_en,
        "value": value,
        "source": source,
        "source_name_zh": source_zh,
        "source_name_en": source_en,
        "as_of": as_of,
        "self_reported": self_reported,
    }
    if display_zh is not None:
        item["display_zh"] = display_zh
    if display_en is not None:
        item["display_en"] = display_en
    return item


def _section(key: str, title_zh: str, title_en: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": key,
        "title_zh": title_zh,
        "title_en": title_en,
        "items": items,
        "empty_note_zh": "无记录",
        "empty_note_en": "No records",
    }


MARKET = ("market", "市场监督管理局", "Market regulator")


@pytest.fixture
def envelope() -> dict[str, Any]:
    """Every schema section in order; judicial is empty; one self-reported filing; Chinese text throughout."""
    sections = [
        _section(
            "registration",
            "身份与登记信息",
            "Identity and registration",
            [
                _item("market.name", "企业名称", "Name", "石家庄某某科技有限公司", *MARKET),
                _item(
                    "market.status",
                    "登记状态",
                    "Registration status",
                    "in_business",
                    *MARKET,
                    display_zh="存续（在营）",
                    display_en="In business",
                ),
                _item("market.region", "行政区划", "Region", "130100", *MARKET, display_zh="河北省石家庄市"),
                _item("market.industry", "行业", "Industry", "I6513", *MARKET),
            ],
        ),
        _section("judicial", "司法信息", "Judicial and enforcement records", []),
        _section(
            "administrative",
            "行政许可与处罚",
            "Administrative licences and penalties",
            [
                _item(
                    "admin.licences",
                    "行政许可",
                    "Licences",
                    ["食品经营许可证", "增值电信业务经营许可证"],
                    "admin",
                    "行政审批局",
                    "Administrative approvals bureau",
                ),
                _item("admin.penalties", "行政处罚", "Penalties", 0, "admin", "行政审批局", "Approvals bureau"),
            ],
        ),
        _section(
            "environmental",
            "环境信用",
            "Environmental rating",
            [_item("env.rating", "环境信用评价", "Environmental credit rating", "green", "env", "生态环境局", "EEB")],
        ),
        _section(
            "certifications",
            "科技企业认定",
            "Technology-enterprise certifications",
            [_item("cert.hnte", "高新技术企业", "High-tech enterprise", True, "sci", "科学技术局", "Science bureau")],
        ),
        _section(
            "ip",
            "知识产权",
            "Intellectual property",
            [
                _item(
                    "ip.software_copyrights",
                    "软件著作权",
                    "Software copyrights",
                    12,
                    "ip",
                    "版权局",
                    "Copyright office",
                )
            ],
        ),
        _section(
            "tax",
            "纳税信用",
            "Tax",
            [_item("tax.grade_a", "A级纳税人", "Grade-A taxpayer", True, "tax", "税务局", "Tax bureau")],
        ),
        _section(
            "self_reported",
            "自主填报信息",
            "Voluntary filings",
            [
                _item(
                    "self.rd_spend",
                    "研发投入",
                    "R&D spend",
                    1200000,
                    "enterprise",
                    "企业自主填报",
                    "The enterprise",
                    display_zh="120万元",
                    display_en="CNY 1.2 million",
                    self_reported=True,
                    as_of="2026-11-20",
                )
            ],
        ),
    ]
    return {
        "report": {
            "format": "xinrong.credit_report.v1",
            "report_id": REPORT_ID,
            "issued_at": "2026-12-02T10:15:00Z",
            "issuer": "node",
            "enterprise": {"uscc": USCC, "name": "石家庄某某科技有限公司"},
            "audit_leaf_index": 1234,
            "sections": sections,
            "commitment": {"text_sha256": COMMITMENT_SHA, "signed_at": "2026-11-20T08:00:00Z"},
            "disclaimer_zh": "本报告仅依据公开信息及企业自主填报信息生成，不构成任何授信建议。",
            "disclaimer_en": "Built only from public records and the enterprise's voluntary filings; not lending advice.",
        },
        "signature": {"algorithm": "ed25519", "key_fingerprint": FINGERPRINT, "value": "c2lnbmF0dXJl"},
    }


def _pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"^Pages:\s+(\d+)$", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def _pdftotext(pdf: Path, *, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    out = subprocess.run(["pdftotext", *pages, str(pdf), "-"], check=True, capture_output=True, timeout=60)
    return out.stdout.decode("utf-8")


def _flat(text: str) -> str:
    """Text without whitespace: line wrapping in a table cell must not fail a check."""
    return re.sub(r"\s+", "", text)


def _page1_png(pdf: Path, tmp_path: Path) -> Path:
    prefix = tmp_path / "page"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(prefix)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == 1, pngs
    return pngs[0]


def _keep_screenshot(pdf: Path, name: str) -> None:
    """Page 1 at 100 dpi into $XINRONG_REPORT_SCREENSHOTS, for review without a PDF viewer."""
    target = os.environ.get("XINRONG_REPORT_SCREENSHOTS")
    if not target:
        return
    Path(target).mkdir(parents=True, exist_ok=True)
    prefix = Path(target) / name
    subprocess.run(
        ["pdftoppm", "-png", "-r", "100", "-f", "1", "-l", "1", "-singlefile", str(pdf), str(prefix)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _assert_page_image(png: Path) -> None:
    """An A4 page at 60 dpi (496 x 702) with real ink on it, not a blank page."""
    from PIL import Image

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    with Image.open(png) as image:
        width, height = image.size
        assert abs(width - 496) <= 2 and abs(height - 702) <= 2, image.size  # 210 x 297 mm, rounded by poppler
        grey = image.convert("L")
        dark = sum(grey.histogram()[:128])
    assert dark > 2_000, dark


@needs_poppler
@needs_font
def test_pdf_zh_has_the_fields_a_loan_officer_files(envelope: dict[str, Any], tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    render_pdf(envelope, pdf, lang="zh")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    _keep_screenshot(pdf, "report-zh")
    _assert_page_image(_page1_png(pdf, tmp_path))
    text = _pdftotext(pdf)
    flat = _flat(text)
    pages = _pages(pdf)
    assert f"第1/{pages}页" in _flat(_pdftotext(pdf, page=1))
    for expected in [
        "企业标准化信用报告",
        "统一社会信用代码",
        "报告编号",
        "签发时间",
        "签名密钥指纹",
        "项目",
        "数据来源",
        "数据截至",
        "身份与登记信息",
        "司法信息",
        "无记录",
        "自主填报信息",
        "存续（在营）",
        "食品经营许可证、增值电信业务经营许可证",
        "石家庄某某科技有限公司",
        "120万元",
        "【自主填报】",
        "信用承诺",
        COMMITMENT_SHA,
        "本报告仅依据公开信息",
        "规范化JSON",
        USCC,
        REPORT_ID,
        FINGERPRINT,
        _flat(VERIFY_COMMAND),
    ]:
        assert expected in flat, expected
    # Sections in the schema's order, numbered.
    order = [flat.index(f"{n}.{t}") for n, t in enumerate(["身份与登记信息", "司法信息", "行政许可与处罚"], 1)]
    assert order == sorted(order)
    # The marker sits on the self-reported item and on no public record.
    assert flat.count("研发投入【自主填报】") == 1
    assert "登记状态【自主填报】" not in flat
    assert "Self-reported" not in text


@needs_poppler
@needs_font
def test_pdf_en_has_english_labels(envelope: dict[str, Any], tmp_path: Path) -> None:
    pdf = tmp_path / "report-en.pdf"
    render_pdf(envelope, pdf, lang="en")
    _keep_screenshot(pdf, "report-en")
    _assert_page_image(_page1_png(pdf, tmp_path))
    text = _pdftotext(pdf)
    flat = _flat(text)
    assert f"Page1/{_pages(pdf)}" in _flat(_pdftotext(pdf, page=1))
    for expected in [
        "Standardized enterprise credit report",
        "USCC",
        "Report id",
        "Signing key fingerprint",
        "Data as of",
        "Identity and registration",
        "Judicial and enforcement records",
        "No records",
        "In business",
        "R&D spend [Self-reported]",
        "CNY 1.2 million",
        "Credit commitment",
        "canonical JSON",
        VERIFY_COMMAND,
    ]:
        assert _flat(expected) in flat, expected
    for expected in [USCC, REPORT_ID, FINGERPRINT, COMMITMENT_SHA, "石家庄某某科技有限公司"]:
        assert expected in flat, expected
    assert "【自主填报】" not in flat
    assert "Yes" in text  # a bool without display_en is printed as a word


@needs_poppler
@needs_font
def test_pdf_footer_on_every_page(envelope: dict[str, Any], tmp_path: Path) -> None:
    many = [
        _item(
            f"admin.licence_{i}",
            f"行政许可第{i}项",
            f"Licence {i}",
            f"许可证编号 LIC-{i:04d}",
            "admin",
            "行政审批局",
            "B",
        )
        for i in range(120)
    ]
    envelope["report"]["sections"][2]["items"] = many
    pdf = tmp_path / "long.pdf"
    render_pdf(envelope, pdf, lang="zh")
    pages = _pages(pdf)
    assert pages >= 3, pages
    for page in range(1, pages + 1):
        flat = _flat(_pdftotext(pdf, page=page))
        assert REPORT_ID in flat and FINGERPRINT in flat, page
        assert f"第{page}/{pages}页" in flat, page
        assert _flat(VERIFY_COMMAND) in flat, page
    # A long table keeps its header row on each page it spans.
    assert "数据来源" in _flat(_pdftotext(pdf, page=2))


@needs_poppler
@needs_font
def test_pdf_prints_markup_in_values_as_text(envelope: dict[str, Any], tmp_path: Path) -> None:
    """ReportLab's Paragraph parses markup: a value with tags is printed literally, never interpreted."""
    item = envelope["report"]["sections"][0]["items"][0]
    item["value"] = XSS
    item["label_zh"] = "名称 <b>&amp;</b>"
    pdf = tmp_path / "xss.pdf"
    render_pdf(envelope, pdf, lang="zh")
    flat = _flat(_pdftotext(pdf))
    assert _flat(XSS) in flat
    assert "名称<b>&amp;</b>" in flat


@needs_poppler
@needs_font
def test_pdf_holds_only_the_report_and_its_embedded_font(envelope: dict[str, Any], tmp_path: Path) -> None:
    """Prints the same anywhere and carries nothing else: every font embedded, no links, scripts, files or images."""
    pdf = tmp_path / "report.pdf"
    render_pdf(envelope, pdf, lang="zh")
    fonts = subprocess.run(["pdffonts", str(pdf)], check=True, capture_output=True, text=True, timeout=60).stdout
    rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
    assert rows and all("WenQuanYiMicroHei" in row[0] for row in rows), fonts
    assert all(row[-5:-2] == ["yes", "yes", "yes"] for row in rows), fonts  # embedded, subset, ToUnicode
    data = pdf.read_bytes()
    for marker in (b"/JavaScript", b"/JS", b"/URI", b"/Launch", b"/EmbeddedFile", b"/XObject", b"/OpenAction"):
        assert marker not in data, marker


@needs_font
def test_pdf_is_reproducible(envelope: dict[str, Any], tmp_path: Path) -> None:
    """The same envelope gives the same bytes: no render time or random document id is embedded."""
    a, b = tmp_path / "a.pdf", tmp_path / "b.pdf"
    render_pdf(envelope, a, lang="zh")
    render_pdf(copy.deepcopy(envelope), b, lang="zh")
    assert a.read_bytes() == b.read_bytes()


def test_pdf_missing_font_is_a_clear_error(
    envelope: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-font.ttc"
    with pytest.raises(ReportFontMissing, match="fonts-wqy-microhei") as exc:
        render_pdf(envelope, tmp_path / "x.pdf", lang="zh", font=missing)
    assert str(missing) in str(exc.value)
    monkeypatch.setenv(report_render.FONT_ENV, str(missing))
    with pytest.raises(ReportFontMissing, match=re.escape(str(missing))):
        render_pdf(envelope, tmp_path / "x.pdf", lang="zh")
    assert not (tmp_path / "x.pdf").exists()
    garbage = tmp_path / "garbage.ttf"
    garbage.write_bytes(b"not a font at all" * 100)
    with pytest.raises(ReportFontUnusable, match="TrueType"):
        render_pdf(envelope, tmp_path / "x.pdf", lang="zh", font=garbage)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.ttf"]  # no PDF, no temporary file left


@needs_font
def test_pdf_replaces_a_previous_file_whole(envelope: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    out.write_bytes(b"old")
    render_pdf(envelope, out, lang="en")
    assert out.read_bytes() == report_render.pdf_bytes(envelope, lang="en")
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]


def test_html_is_self_contained_and_labelled(envelope: dict[str, Any]) -> None:
    html = render_html(envelope, lang="zh")
    for expected in [
        "企业标准化信用报告",
        "统一社会信用代码",
        USCC,
        REPORT_ID,
        FINGERPRINT,
        COMMITMENT_SHA,
        "无记录",
        "【自主填报】",
        VERIFY_COMMAND,
        "size: A4",
        "@media print",
    ]:
        assert expected in html, expected
    assert html.count("【自主填报】") == 2  # on the item, and in the legend that explains it
    # Nothing is loaded from elsewhere: no stylesheet link, script, image or URL.
    assert not re.search(r"<(link|script|img|iframe)\b|\bsrc=|https?://|url\(", html)
    en = render_html(envelope, lang="en")
    assert "Standardized enterprise credit report" in en and "[Self-reported]" in en and "Data as of" in en
    assert '<html lang="en">' in en


def test_html_escapes_every_report_value(envelope: dict[str, Any]) -> None:
    report = envelope["report"]
    report["enterprise"]["name"] = XSS
    report["sections"][0]["items"][1]["display_zh"] = XSS
    report["sections"][0]["title_zh"] = "</h2><script>alert(2)</script>"
    report["sections"][0]["key"] = '"><script>alert(3)</script>'
    report["disclaimer_zh"] = "<b onmouseover=alert(4)>x</b>"
    html = render_html(envelope, lang="zh")
    assert "<script" not in html and "<img" not in html and "<b " not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/h2&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;script&gt;alert(3)" in html


def test_html_print_footer_cannot_break_out_of_css(envelope: dict[str, Any]) -> None:
    """The print footer sits in a CSS string inside <style>: a value there is CSS-escaped, not HTML-escaped."""
    envelope["signature"]["key_fingerprint"] = 'x"; } </style><script>alert(5)</script>'
    envelope["report"]["report_id"] = 'cr-\\"\n}'
    html = render_html(envelope, lang="en")
    assert html.count("</style>") == 1 and "<script" not in html
    style = html[html.index("<style>") : html.index("</style>")]
    footer = re.search(r'@bottom-left \{ content: "([^"]*)";', style)
    assert footer, style
    assert re.fullmatch(r"(?:[A-Za-z0-9]|\\[0-9a-f]{6})*", footer.group(1))
    decoded = re.sub(r"\\([0-9a-f]{6})", lambda m: chr(int(m.group(1), 16)), footer.group(1))
    assert decoded.startswith('Report id: cr-\\"\n}\nSigning key fingerprint: x"; } </style>')  # printed as given


CHROMIUM = Path("/usr/bin/chromium")


@needs_poppler
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: run `make browser` as root")
def test_html_prints_on_a4_with_the_footer_on_every_page(envelope: dict[str, Any], tmp_path: Path) -> None:
    """Print the HTML with headless Chromium (what a loan officer's browser does): A4, footer on each page."""
    envelope["report"]["sections"][2]["items"] = [
        _item(f"admin.licence_{i}", f"行政许可第{i}项", f"Licence {i}", f"LIC-{i:04d}", "admin", "行政审批局", "B")
        for i in range(60)
    ]
    page = tmp_path / "report.html"
    page.write_text(render_html(envelope, lang="zh"), encoding="utf-8")
    pdf = tmp_path / "printed.pdf"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True, timeout=60).stdout
    assert "(A4)" in info, info
    pages = _pages(pdf)
    assert pages >= 2
    for number in range(1, pages + 1):
        flat = _flat(_pdftotext(pdf, page=number))
        assert REPORT_ID in flat and FINGERPRINT in flat and _flat(VERIFY_COMMAND) in flat, number
        assert f"{number}/{pages}" in flat, number


def test_refuses_an_unknown_shape_or_language(envelope: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown report language"):
        render_html(envelope, lang="fr")
    bad = copy.deepcopy(envelope)
    bad["report"]["format"] = "xinrong.credit_report.v9"
    with pytest.raises(ReportShapeError, match="format"):
        render_html(bad, lang="zh")
    unsigned = copy.deepcopy(envelope)
    del unsigned["signature"]
    with pytest.raises(ReportShapeError, match="signature"):
        render_pdf(unsigned, tmp_path / "u.pdf", lang="zh")
    no_uscc = copy.deepcopy(envelope)
    del no_uscc["report"]["enterprise"]["uscc"]
    with pytest.raises(ReportShapeError, match="uscc"):
        render_html(no_uscc, lang="en")


def test_empty_report_and_no_commitment(envelope: dict[str, Any]) -> None:
    """An enterprise with no public record and no filing: every section prints its empty note; no commitment line."""
    for section in envelope["report"]["sections"]:
        section["items"] = []
    envelope["report"]["commitment"] = None
    view = report_render.report_view(envelope, lang="en")
    assert [s.key for s in view.sections][:2] == ["registration", "judicial"]
    assert all(not s.rows for s in view.sections)
    assert view.commitment is None and not view.any_self_reported
    html = render_html(envelope, lang="en")
    assert html.count("No records") == 8
    assert "Credit commitment" not in html and "[Self-reported]" not in html


@needs_font
def test_bench_report_render_prints_medians() -> None:
    from xinrong.tools.bench import report_render as bench

    result = bench.run(items=10, repeats=2, lang="zh")
    assert result["bench"] == "report-render" and result["pdf_pages"] >= 1
    assert 0 < result["pdf_p50_ms"] < 60_000 and result["html_p50_ms"] > 0


def test_every_filing_is_marked_even_without_its_flag(envelope: dict[str, Any]) -> None:
    filing = envelope["report"]["sections"][-1]["items"][0]
    del filing["self_reported"]
    view = report_render.report_view(envelope, lang="zh")
    assert [r.self_reported for r in view.sections[-1].rows] == [True]
    assert not any(r.self_reported for s in view.sections[:-1] for r in s.rows)
    assert '研发投入 <span class="marker">【自主填报】</span>' in render_html(envelope, lang="zh")


@needs_poppler
@needs_font
def test_renders_what_the_node_builds_and_signs(tmp_path: Path) -> None:
    """The node's own builder and signer (xinrong.report, the `public` branch) -> this renderer -> poppler.

    Skipped until that module is on the branch; from then on it guards the one interface the two sides share.
    """
    report_mod = pytest.importorskip("xinrong.report", reason="xinrong.report (the report builder) is not here yet")
    from xinrong.catalog import default_catalog
    from xinrong.keys.signing import SigningKey

    catalog = default_catalog()
    records = [
        report_mod.SourcedValue("market", "market.status", "in_business", "2026-09-30"),
        report_mod.SourcedValue("market", "market.env_credit_rating", "green", "2026-09-30"),
        report_mod.SourcedValue("tax", "tax.grade_a_taxpayer", True, "2026-09-30"),
    ]
    commitment: Any = getattr(catalog, "commitment", None)  # the pinned commitment text (public's catalog)
    assert commitment is not None
    filing = report_mod.FiledItems("f" * 32, {"self.patents_held": 4}, 1_790_000_000, commitment.sha256)
    report = report_mod.build_report(
        catalog=catalog,
        enterprise=USCC,
        name="石家庄某某科技有限公司",
        records=records,
        filings=[filing],
        issued_at=1_790_000_100,
        report_id=REPORT_ID,
        audit_leaf_index=41,
    )
    key = SigningKey.generate()
    envelope = json.loads(json.dumps(report_mod.sign_report(report, key), ensure_ascii=False))
    fingerprint = envelope["signature"]["key_fingerprint"]
    pdf = tmp_path / "node-report.pdf"
    render_pdf(envelope, pdf, lang="zh")
    _assert_page_image(_page1_png(pdf, tmp_path))
    flat = _flat(_pdftotext(pdf))
    for expected in [USCC, REPORT_ID, fingerprint, "企业标准化信用报告", "【自主填报】", "无记录", "2026-09-30"]:
        assert expected in flat, expected
    html = render_html(envelope, lang="en")
    assert fingerprint in html and "[Self-reported]" in html
