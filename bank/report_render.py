# ruff: noqa: RUF001  (Chinese labels use full-width punctuation on purpose)
"""The printable standardized credit report (企业标准化信用报告): HTML and A4 PDF, Chinese or English.

A loan officer files the report on paper, so the printable form carries everything needed to check it later
without the renderer: the report id, the node's signing-key fingerprint and how to verify the JSON it came
from, on every page. Both forms are built from one view (:func:`report_view`) of the signed envelope
described in ``notes/REPORT_SCHEMA.md`` (``{"report": {...}, "signature": {...}}``), so HTML and PDF never
disagree about what is printed.

Rendering does not verify the signature: the caller (``xinrong bank report``) verifies the envelope first, and
the printout tells the reader how to verify the JSON again offline. Nothing but the report's own data and the
CJK font goes into the output (no logos, no network, no timestamps of the rendering: the PDF is byte-for-byte
reproducible from the same envelope).

The PDF uses ReportLab with a TrueType CJK font from Debian's packages (``fonts-wqy-microhei``, which
``make browser`` installs); the font path is a parameter, else ``$XINRONG_REPORT_FONT``, else the Debian path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape as _xml_escape

REPORT_FORMAT = "xinrong.credit_report.v1"
DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
FONT_ENV = "XINRONG_REPORT_FONT"
VERIFY_COMMAND = "xinrong bank report verify --in report.json"

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")


class ReportShapeError(ValueError):
    """The envelope is not a credit report this renderer knows (wrong format or a missing required key)."""


class ReportFontMissing(FileNotFoundError):
    """The CJK font the PDF needs is not on this machine."""


class ReportFontUnusable(ValueError):
    """The font file exists but ReportLab cannot embed it (not TrueType outlines, wrong subfont index)."""


# Fixed texts per language. Everything else printed comes from the report itself.
LABELS: dict[Lang, dict[str, str]] = {
    "zh": {
        "title": "企业标准化信用报告",
        "subtitle": "Standardized enterprise credit report",
        "enterprise": "企业名称",
        "uscc": "统一社会信用代码",
        "report_id": "报告编号",
        "issued_at": "签发时间",
        "issuer": "签发方",
        "audit_leaf": "审计日志叶序号",
        "col_item": "项目",
        "col_value": "内容",
        "col_source": "数据来源",
        "col_as_of": "数据截至",
        "self_reported": "自主填报",
        "self_reported_legend": "标注【自主填报】的内容由企业自主填报并签名，平台未核实其真实性。",
        "commitment": "信用承诺",
        "commitment_line": "企业已于 {signed_at} 签署信用承诺（承诺文本 SHA-256：{sha}）。",
        "disclaimer": "声明",
        "verification": "验证方法",
        "fingerprint": "签名密钥指纹",
        "page": "第 {page} / {pages} 页",
        "verify_how": "验证：{cmd}（节点签名覆盖报告的规范化 JSON；先用 CA 核验节点绑定，再做 Ed25519 验签）",
        "yes": "是",
        "no": "否",
        "list_sep": "、",
        "none": "—",
        "colon": "：",
    },
    "en": {
        "title": "Standardized enterprise credit report",
        "subtitle": "企业标准化信用报告",
        "enterprise": "Enterprise",
        "uscc": "USCC",
        "report_id": "Report id",
        "issued_at": "Issued at",
        "issuer": "Issuer",
        "audit_leaf": "Audit log leaf",
        "col_item": "Item",
        "col_value": "Value",
        "col_source": "Source",
        "col_as_of": "Data as of",
        "self_reported": "Self-reported",
        "self_reported_legend": (
            "Items marked [Self-reported] were filed and signed by the enterprise; the platform has not checked them."
        ),
        "commitment": "Credit commitment",
        "commitment_line": "The enterprise signed a credit commitment on {signed_at} (commitment text SHA-256: {sha}).",
        "disclaimer": "Disclaimer",
        "verification": "How to verify",
        "fingerprint": "Signing key fingerprint",
        "page": "Page {page} / {pages}",
        "verify_how": (
            "Verify: {cmd} (the node's signature covers the canonical JSON of the report; "
            "check the node's binding against the CA, then Ed25519-verify)"
        ),
        "yes": "Yes",
        "no": "No",
        "list_sep": ", ",
        "none": "-",
        "colon": ": ",
    },
}


def self_reported_marker(lang: Lang) -> str:
    """The marker printed next to every self-reported item (tests and docs look for exactly this)."""
    return "【自主填报】" if lang == "zh" else "[Self-reported]"


@dataclasses.dataclass(frozen=True)
class Row:
    item: str
    value: str
    source: str
    as_of: str
    self_reported: bool


@dataclasses.dataclass(frozen=True)
class Section:
    number: int
    key: str
    title: str
    rows: tuple[Row, ...]
    empty_note: str


@dataclasses.dataclass(frozen=True)
class ReportView:
    """Everything printed, in print order, as plain (unescaped) strings in one language."""

    lang: Lang
    labels: Mapping[str, str]
    marker: str
    enterprise_name: str
    uscc: str
    report_id: str
    issued_at: str
    issuer: str
    audit_leaf: str
    sections: tuple[Section, ...]
    commitment: str | None
    disclaimer: str
    fingerprint: str
    verify_line: str
    any_self_reported: bool

    def header(self) -> list[tuple[str, str]]:
        lab = self.labels
        rows = [
            (lab["enterprise"], self.enterprise_name),
            (lab["uscc"], self.uscc),
            (lab["report_id"], self.report_id),
            (lab["issued_at"], self.issued_at),
            (lab["issuer"], self.issuer),
        ]
        if self.audit_leaf:
            rows.append((lab["audit_leaf"], self.audit_leaf))
        return rows

    def footer_lines(self) -> list[str]:
        """The verification footer printed on every page (the page number is added by each form)."""
        lab = self.labels
        return [f"{lab['report_id']}: {self.report_id}", f"{lab['fingerprint']}: {self.fingerprint}", self.verify_line]

    def page_label(self, page: int, pages: int) -> str:
        return self.labels["page"].format(page=page, pages=pages)


def _check_lang(lang: str) -> Lang:
    if lang not in LANGS:
        raise ValueError(f"unknown report language {lang!r}: use one of {', '.join(LANGS)}")
    return lang


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportShapeError(f"credit report: {where} must be an object")
    return value


def _required_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ReportShapeError(f"credit report: {where}.{key} is missing")
    return value


def _text(obj: Mapping[str, Any], base: str, lang: Lang, fallback: str = "") -> str:
    """``base_zh`` / ``base_en``, falling back to the other language, then to ``fallback``."""
    other: Lang = "en" if lang == "zh" else "zh"
    for key in (f"{base}_{lang}", f"{base}_{other}"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return fallback


def _display(item: Mapping[str, Any], lang: Lang) -> str:
    """display_* when the report has it, else the value in a readable form (lists joined, booleans as words)."""
    shown = item.get(f"display_{lang}")
    if isinstance(shown, str) and shown:
        return shown
    lab = LABELS[lang]
    value = item.get("value")
    if value is None:
        return lab["none"]
    if isinstance(value, bool):
        return lab["yes"] if value else lab["no"]
    if isinstance(value, list | tuple):
        return lab["list_sep"].join(str(v) for v in value) or lab["none"]
    return str(value)


def report_view(envelope: Mapping[str, Any], *, lang: str = "zh") -> ReportView:
    """The printed content of a signed report envelope, in ``lang``; refuses a shape it does not know."""
    language = _check_lang(lang)
    env = _mapping(envelope, "the envelope")
    report = _mapping(env.get("report"), "report")
    signature = _mapping(env.get("signature"), "signature")
    fmt = report.get("format")
    if fmt != REPORT_FORMAT:
        raise ReportShapeError(f"credit report: format {fmt!r} is not {REPORT_FORMAT!r}")
    enterprise = _mapping(report.get("enterprise"), "report.enterprise")
    raw_sections = report.get("sections")
    if not isinstance(raw_sections, Sequence) or isinstance(raw_sections, str):
        raise ReportShapeError("credit report: report.sections must be a list")
    lab = LABELS[language]
    sections: list[Section] = []
    any_self = False
    for number, raw in enumerate(raw_sections, start=1):
        sec = _mapping(raw, f"report.sections[{number - 1}]")
        key = str(sec.get("key", ""))
        raw_items = sec.get("items") or []
        if not isinstance(raw_items, Sequence) or isinstance(raw_items, str):
            raise ReportShapeError(f"credit report: report.sections[{number - 1}].items must be a list")
        rows: list[Row] = []
        for raw_item in raw_items:
            item = _mapping(raw_item, f"an item of section {key!r}")
            # A filing must never print as a public record: the voluntary-filings section marks every item,
            # whatever its flag says.
            self_reported = item.get("self_reported") is True or key == "self_reported"
            any_self = any_self or self_reported
            rows.append(
                Row(
                    item=_text(item, "label", language, str(item.get("field", ""))),
                    value=_display(item, language),
                    source=_text(item, "source_name", language, str(item.get("source", "")) or lab["none"]),
                    as_of=str(item.get("as_of") or lab["none"]),
                    self_reported=self_reported,
                )
            )
        sections.append(
            Section(
                number=number,
                key=key,
                title=_text(sec, "title", language, key),
                rows=tuple(rows),
                empty_note=_text(sec, "empty_note", language, lab["none"]),
            )
        )
    commitment_line: str | None = None
    commitment = report.get("commitment")
    if commitment is not None:
        c = _mapping(commitment, "report.commitment")
        commitment_line = lab["commitment_line"].format(
            signed_at=str(c.get("signed_at", lab["none"])), sha=str(c.get("text_sha256", lab["none"]))
        )
    leaf = report.get("audit_leaf_index")
    return ReportView(
        lang=language,
        labels=lab,
        marker=self_reported_marker(language),
        enterprise_name=str(enterprise.get("name") or lab["none"]),
        uscc=_required_str(enterprise, "uscc", "report.enterprise"),
        report_id=_required_str(report, "report_id", "report"),
        issued_at=str(report.get("issued_at") or lab["none"]),
        issuer=str(report.get("issuer") or lab["none"]),
        audit_leaf="" if leaf is None else str(leaf),
        sections=tuple(sections),
        commitment=commitment_line,
        disclaimer=_text(report, "disclaimer", language),
        fingerprint=_required_str(signature, "key_fingerprint", "signature"),
        verify_line=lab["verify_how"].format(cmd=VERIFY_COMMAND),
        any_self_reported=any_self,
    )


# ---------------------------------------------------------------------------------------------------------------
# HTML: one self-contained page (inline CSS, print CSS for A4), Jinja2 with autoescape on.

_HTML_TEMPLATE = """<!doctype html>
<html lang="{{ 'zh-CN' if v.lang == 'zh' else 'en' }}">
<head>
<meta charset="utf-8">
<title>{{ lab.title }} {{ v.report_id }}</title>
<style>
@page { size: A4; margin: 18mm 16mm 30mm 16mm;
  @bottom-left { content: {{ footer_css }}; white-space: pre-wrap; font-family: "WenQuanYi Micro Hei", sans-serif;
    font-size: 7pt; color: #333; width: 150mm; vertical-align: top; padding-top: 4mm; }
  @bottom-right { content: counter(page) " / " counter(pages); font-family: "WenQuanYi Micro Hei", sans-serif;
    font-size: 8pt; color: #555; vertical-align: top; padding-top: 4mm; } }
body { font-family: "WenQuanYi Micro Hei", "Noto Sans CJK SC", "PingFang SC", sans-serif; color: #111;
  max-width: 180mm; margin: 0 auto; padding: 8mm 0 36mm; font-size: 10pt; line-height: 1.45; }
h1 { text-align: center; font-size: 18pt; margin: 0; }
.subtitle { text-align: center; color: #555; margin: 2pt 0 10pt; }
h2 { font-size: 12pt; margin: 14pt 0 4pt; border-bottom: 1.5pt solid #1f3a5f; padding-bottom: 2pt;
  break-after: avoid; page-break-after: avoid; }
section.short { break-inside: avoid; page-break-inside: avoid; }
table { width: 100%; border-collapse: collapse; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 0.5pt solid #999; padding: 3pt 5pt; text-align: left; vertical-align: top;
  word-break: break-all; }
th { background: #e8edf3; }
table.header th { width: 28%; }
col.item { width: 26%; } col.value { width: 38%; } col.source { width: 22%; } col.asof { width: 14%; }
tr.self td { background: #fff6e0; }
.marker { color: #a05a00; font-weight: bold; white-space: nowrap; }
.empty { color: #666; font-style: italic; margin: 2pt 0 0 4pt; }
.commitment { margin-top: 12pt; }
.disclaimer { margin-top: 12pt; color: #333; font-size: 9pt; }
.legend { color: #a05a00; font-size: 9pt; }
footer { margin-top: 16pt; border-top: 0.5pt solid #999; padding-top: 4pt; font-size: 8pt; color: #333;
  word-break: break-all; }
footer p { margin: 1pt 0; }
@media print { body { padding: 0; max-width: none; } }
</style>
</head>
<body>
<h1>{{ lab.title }}</h1>
<p class="subtitle">{{ lab.subtitle }}</p>
<table class="header">
{% for name, value in v.header() %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
{% for s in v.sections %}
<section id="s-{{ s.key }}"{% if s.rows|length <= 12 %} class="short"{% endif %}>
<h2>{{ s.number }}. {{ s.title }}</h2>
{% if s.rows %}<table>
<colgroup><col class="item"><col class="value"><col class="source"><col class="asof"></colgroup>
<thead><tr><th>{{ lab.col_item }}</th><th>{{ lab.col_value }}</th><th>{{ lab.col_source }}</th>\
<th>{{ lab.col_as_of }}</th></tr></thead>
<tbody>
{% for r in s.rows %}<tr{% if r.self_reported %} class="self"{% endif %}><td>{{ r.item }}\
{% if r.self_reported %} <span class="marker">{{ v.marker }}</span>{% endif %}</td>\
<td>{{ r.value }}</td><td>{{ r.source }}</td><td>{{ r.as_of }}</td></tr>
{% endfor %}</tbody>
</table>{% else %}<p class="empty">{{ s.empty_note }}</p>{% endif %}
</section>
{% endfor %}
{% if v.any_self_reported %}<p class="legend">{{ lab.self_reported_legend }}</p>{% endif %}
{% if v.commitment %}<p class="commitment"><strong>{{ lab.commitment }}{{ lab.colon }}</strong>{{ v.commitment }}</p>{% endif %}
{% if v.disclaimer %}<p class="disclaimer"><strong>{{ lab.disclaimer }}{{ lab.colon }}</strong>{{ v.disclaimer }}</p>{% endif %}
<footer>
{% for line in v.footer_lines() %}<p>{{ line }}</p>
{% endfor %}</footer>
</body>
</html>
"""

_html_lock = threading.Lock()
_html_template: Any = None


def _template() -> Any:
    global _html_template
    with _html_lock:
        if _html_template is None:
            import jinja2

            env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
            _html_template = env.from_string(_HTML_TEMPLATE)
        return _html_template


def render_html(envelope: dict[str, Any], *, lang: str = "zh") -> str:
    """The report as one self-contained HTML page (A4 print CSS); every report value is HTML-escaped."""
    view = report_view(envelope, lang=lang)
    footer_css = _css_string("\n".join(view.footer_lines()))
    html: str = _template().render(v=view, lab=view.labels, footer_css=footer_css)
    return html


def _css_string(text: str) -> Any:
    """A CSS string literal holding ``text``, for the print footer in ``@page`` margin boxes.

    Autoescape is for HTML, not CSS, so every character but ASCII letters and digits is written as a
    CSS hex escape: nothing in a report value can end the string, the rule or the ``<style>`` element.
    """
    import markupsafe

    out = ['"']
    for ch in text:
        # Six hex digits always; a space is escaped too (CSS swallows one whitespace after an escape).
        out.append(ch if ch.isascii() and ch.isalnum() else f"\\{ord(ch):06x}")
    out.append('"')
    return markupsafe.Markup("".join(out))


# ---------------------------------------------------------------------------------------------------------------
# PDF: ReportLab platypus, A4, a CJK TrueType font, the verification footer drawn on every page.

_font_lock = threading.Lock()
_fonts: dict[tuple[str, int], str] = {}


def font_path(explicit: Path | str | None = None) -> Path:
    """The CJK font to use: the argument, else ``$XINRONG_REPORT_FONT``, else Debian's WenQuanYi Micro Hei."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(FONT_ENV, "")
    return Path(env) if env else DEFAULT_FONT


def _register_font(path: Path, subfont_index: int) -> str:
    """Register the TrueType font once per process (parsing a 5 MB .ttc costs more than a render)."""
    if not path.is_file():
        raise ReportFontMissing(
            f"the credit report's CJK font {path} is missing: run 'make browser' "
            f"(apt-get install -y fonts-wqy-microhei) or point ${FONT_ENV} at a TrueType CJK font (.ttf/.ttc)"
        )
    key = (str(path.resolve()), subfont_index)
    with _font_lock:
        name = _fonts.get(key)
        if name is None:
            from reportlab.pdfbase import pdfmetrics
            from reportlab.pdfbase.ttfonts import TTFont

            name = "XRCJK-" + hashlib.sha256(f"{key[0]}#{subfont_index}".encode()).hexdigest()[:12]
            try:
                pdfmetrics.registerFont(TTFont(name, key[0], subfontIndex=subfont_index))
            except Exception as exc:  # ReportLab raises TTFError and plain errors for unusable files
                raise ReportFontUnusable(
                    f"the font {path} (subfont {subfont_index}) cannot be embedded in the credit report: {exc}; "
                    "it needs TrueType outlines (.ttf/.ttc), e.g. Debian's fonts-wqy-microhei"
                ) from exc
            _fonts[key] = name
        return name


def _p(text: str) -> str:
    """A Paragraph's markup from plain text: ReportLab parses <b>, &amp; etc., so report data is escaped."""
    return _xml_escape(text).replace("\n", "<br/>")


def render_pdf(
    envelope: dict[str, Any],
    path: Path,
    *,
    lang: str = "zh",
    font: Path | str | None = None,
    subfont_index: int = 0,
) -> None:
    """Write the report as an A4 PDF to ``path``; the same envelope gives the same bytes.

    The file appears whole or not at all (written beside ``path``, then renamed): a loan officer never files a
    half-written report, and a refused envelope or a missing font leaves no file behind.
    """
    data = pdf_bytes(envelope, lang=lang, font=font, subfont_index=subfont_index)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pdf_bytes(
    envelope: Mapping[str, Any],
    *,
    lang: str = "zh",
    font: Path | str | None = None,
    subfont_index: int = 0,
) -> bytes:
    """The report as A4 PDF bytes (what :func:`render_pdf` writes)."""
    import io

    view = report_view(envelope, lang=lang)
    font_name = _register_font(font_path(font), subfont_index)

    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas
    from reportlab.platypus import Frame, PageTemplate, Paragraph, Table, TableStyle
    from reportlab.platypus.doctemplate import BaseDocTemplate
    from reportlab.platypus.flowables import KeepTogether

    lab = view.labels
    page_w, page_h = A4
    margin_x, margin_top, margin_bottom = 16 * mm, 16 * mm, 28 * mm
    body_w = page_w - 2 * margin_x

    def style(name: str, size: float, **kw: Any) -> ParagraphStyle:
        return ParagraphStyle(name, fontName=font_name, fontSize=size, leading=size * 1.35, wordWrap="CJK", **kw)

    title = style("title", 18, alignment=TA_CENTER, spaceAfter=2)
    subtitle = style("subtitle", 10, alignment=TA_CENTER, textColor=colors.HexColor("#555555"), spaceAfter=8)
    heading = style("heading", 11.5, spaceBefore=8, spaceAfter=3, textColor=colors.HexColor("#1f3a5f"))
    cell = style("cell", 9)
    head_cell = style("head", 9, textColor=colors.HexColor("#1f3a5f"))
    empty = style("empty", 9, textColor=colors.HexColor("#666666"), leftIndent=4)
    body = style("body", 9.5, spaceBefore=6)
    legend = style("legend", 8.5, textColor=colors.HexColor("#a05a00"), spaceBefore=6)
    marker_color = "#a05a00"
    grid = colors.HexColor("#999999")
    head_bg = colors.HexColor("#e8edf3")
    self_bg = colors.HexColor("#fff6e0")

    story: list[Any] = [Paragraph(_p(lab["title"]), title), Paragraph(_p(lab["subtitle"]), subtitle)]
    header = Table(
        [[Paragraph(_p(k), head_cell), Paragraph(_p(v), cell)] for k, v in view.header()],
        colWidths=[body_w * 0.28, body_w * 0.72],
    )
    header.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, grid),
                ("FONTNAME", (0, 0), (-1, -1), font_name),  # the cell default is Helvetica, not embedded
                ("BACKGROUND", (0, 0), (0, -1), head_bg),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    story.append(header)

    widths = [body_w * 0.26, body_w * 0.38, body_w * 0.22, body_w * 0.14]
    for sec in view.sections:
        head = Paragraph(_p(f"{sec.number}. {sec.title}"), heading)
        if not sec.rows:
            story.append(KeepTogether([head, Paragraph(_p(sec.empty_note), empty)]))
            continue
        data: list[list[Any]] = [
            [Paragraph(_p(lab[k]), head_cell) for k in ("col_item", "col_value", "col_source", "col_as_of")]
        ]
        commands: list[tuple[Any, ...]] = [
            ("GRID", (0, 0), (-1, -1), 0.5, grid),
            ("FONTNAME", (0, 0), (-1, -1), font_name),  # the cell default is Helvetica, not embedded
            ("BACKGROUND", (0, 0), (-1, 0), head_bg),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
        for i, row in enumerate(sec.rows, start=1):
            item = _p(row.item)
            if row.self_reported:
                item += f' <font color="{marker_color}">{_p(view.marker)}</font>'
                commands.append(("BACKGROUND", (0, i), (-1, i), self_bg))
            data.append([Paragraph(item, cell), Paragraph(_p(row.value), cell), Paragraph(_p(row.source), cell)])
            data[-1].append(Paragraph(_p(row.as_of), cell))
        table = Table(data, colWidths=widths, repeatRows=1)
        table.setStyle(TableStyle(commands))
        # The heading stays with its table (a title alone at the bottom of a page reads as an empty section);
        # a table longer than a page still splits, its header row repeated.
        story.append(KeepTogether([head, table]))
    if view.any_self_reported:
        story.append(Paragraph(_p(lab["self_reported_legend"]), legend))
    if view.commitment:
        story.append(Paragraph(_p(f"{lab['commitment']}{lab['colon']}{view.commitment}"), body))
    if view.disclaimer:
        story.append(Paragraph(_p(f"{lab['disclaimer']}{lab['colon']}{view.disclaimer}"), body))

    footer_lines = view.footer_lines()
    footer_style = style("footer", 7.5, textColor=colors.HexColor("#333333"))

    class _FooterCanvas(Canvas):  # type: ignore[misc]  # reportlab ships no type hints
        """Holds each page until the end so the footer can say "page x / y" (the page count is known last)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._footer(number, total)
                super().showPage()
            super().save()

        def _footer(self, number: int, total: int) -> None:
            self.saveState()
            self.setStrokeColor(grid)
            self.setLineWidth(0.5)
            top = margin_bottom - 6 * mm
            self.line(margin_x, top, page_w - margin_x, top)
            page_label = view.page_label(number, total)
            self.setFont(font_name, 8)
            self.drawRightString(page_w - margin_x, top - 10, page_label)
            block = Paragraph("<br/>".join(_p(line) for line in footer_lines), footer_style)
            _w, h = block.wrap(body_w - 30 * mm, margin_bottom)
            block.drawOn(self, margin_x, top - 3 - h)
            self.restoreState()

    out = io.BytesIO()
    doc = BaseDocTemplate(
        out,
        pagesize=A4,
        leftMargin=margin_x,
        rightMargin=margin_x,
        topMargin=margin_top,
        bottomMargin=margin_bottom,
        title=f"{lab['title']} {view.report_id}",
        author=view.issuer,
        subject=view.uscc,
        creator="xinrong",
        invariant=True,
        initialFontName=font_name,  # the one font in the file, embedded (pdffonts lists nothing else)
    )
    frame = Frame(margin_x, margin_bottom, body_w, page_h - margin_top - margin_bottom, id="body")
    doc.addPageTemplates([PageTemplate(id="report", frames=[frame])])
    doc.build(story, canvasmaker=_FooterCanvas)
    return out.getvalue()
