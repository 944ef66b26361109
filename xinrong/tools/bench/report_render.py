"""``xinrong bench report-render``: how long the printable credit report takes to render.

A synthetic signed-report envelope in the schema's shape (every section; ``--items`` records spread over
them, one self-reported filing; Chinese text) is rendered ``--repeats`` times to an A4 PDF and to HTML after
one warm-up (the warm-up pays the one-off CJK font parse, reported separately). One JSON line: medians
and p90 in milliseconds (wall clock, and the PDF's process CPU time, steadier on a shared machine), pages and
bytes of the PDF.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong.bank import report_render

_SECTIONS = [
    ("registration", "身份与登记信息", "Identity and registration"),
    ("judicial", "司法信息", "Judicial and enforcement records"),
    ("administrative", "行政许可与处罚", "Administrative licences and penalties"),
    ("environmental", "环境信用", "Environmental rating"),
    ("certifications", "科技企业认定", "Technology-enterprise certifications"),
    ("ip", "知识产权", "Intellectual property"),
    ("tax", "纳税信用", "Tax"),
    ("self_reported", "自主填报信息", "Voluntary filings"),
]


def sample_envelope(items: int) -> dict[str, Any]:
    """A report with ``items`` public records round-robin over the public sections and one filing."""
    sections: list[dict[str, Any]] = [
        {
            "key": k,
            "title_zh": zh,
            "title_en": en,
            "items": [],
            "empty_note_zh": "无记录",
            "empty_note_en": "No records",
        }
        for k, zh, en in _SECTIONS
    ]
    public = [s for s in sections if s["key"] not in ("judicial", "self_reported")]  # judicial stays empty
    for i in range(items):
        public[i % len(public)]["items"].append(
            {
                "field": f"{public[i % len(public)]['key']}.f{i}",
                "label_zh": f"记录项目{i}",
                "label_en": f"Record {i}",
                "value": f"值 {i} 石家庄市长安区",
                "source": "market",
                "source_name_zh": "市场监督管理局",
                "source_name_en": "Market regulator",
                "as_of": "2026-11-30",
                "self_reported": False,
            }
        )
    sections[-1]["items"].append(
        {
            "field": "self.rd_spend",
            "label_zh": "研发投入",
            "label_en": "R&D spend",
            "value": 1200000,
            "display_zh": "120万元",
            "source": "enterprise",
            "source_name_zh": "企业自主填报",
            "source_name_en": "The enterprise",
            "as_of": "2026-11-20",
            "self_reported": True,
        }
    )
    return {
        "report": {
            "format": report_render.REPORT_FORMAT,
            "report_id": "cr-" + "0f3c9a1e" * 4,
            "issued_at": "2026-12-02T10:15:00Z",
            "issuer": "node",
            "enterprise": {"uscc": "91130100MA0CR7X12X", "name": "石家庄某某科技有限公司"},
            "audit_leaf_index": 1234,
            "sections": sections,
            "commitment": {"text_sha256": "ab" * 32, "signed_at": "2026-11-20T08:00:00Z"},
            "disclaimer_zh": "本报告仅依据公开信息及企业自主填报信息生成。",
            "disclaimer_en": "Built only from public records and the enterprise's voluntary filings.",
        },
        "signature": {"algorithm": "ed25519", "key_fingerprint": "sha256:" + "4f" * 32, "value": "c2ln"},
    }


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1000, 2),
    }


def run(*, items: int, repeats: int, lang: str) -> dict[str, Any]:
    envelope = sample_envelope(items)
    with tempfile.TemporaryDirectory(prefix="xinrong-bench-report-") as tmp:
        out = Path(tmp) / "report.pdf"
        start = time.perf_counter()
        report_render.render_pdf(envelope, out, lang=lang)  # warm-up: font parse and registration
        first = time.perf_counter() - start
        pdf: list[float] = []
        cpu: list[float] = []  # process CPU time: what the render costs, less the wait for a shared core
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            report_render.render_pdf(envelope, out, lang=lang)
            pdf.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        data = out.read_bytes()
    html: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        report_render.render_html(envelope, lang=lang)
        html.append(time.perf_counter() - start)
    pdf_ms, html_ms = _ms(pdf), _ms(html)
    return {
        "bench": "report-render",
        "lang": lang,
        "items": items + 1,
        "repeats": repeats,
        "pdf_first_ms": round(first * 1000, 2),
        "pdf_p50_ms": pdf_ms["p50"],
        "pdf_p90_ms": pdf_ms["p90"],
        "pdf_cpu_p50_ms": _ms(cpu)["p50"],
        "pdf_pages": len(re.findall(rb"/Type\s*/Page(?![s\w])", data)),
        "pdf_bytes": len(data),
        "html_p50_ms": html_ms["p50"],
        "html_p90_ms": html_ms["p90"],
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=int, default=40, help="public records in the report (default 40)")
    p.add_argument("--repeats", type=int, default=20, help="timed renders of each form (default 20)")
    p.add_argument("--lang", choices=report_render.LANGS, default="zh", help="report language (default zh)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    result = run(items=args.items, repeats=args.repeats, lang=args.lang)
    if not args.json:
        print(
            f"credit report, {result['items']} items, {result['pdf_pages']} pages: PDF p50 {result['pdf_p50_ms']} ms "
            f"(first {result['pdf_first_ms']} ms with the font parse), HTML p50 {result['html_p50_ms']} ms"
        )
    print(json.dumps(result))
    return 0
