"""Chinese and English labels. Chinese is the default: the page is for an enterprise's owner in Hebei."""
# ruff: noqa: RUF001  (Chinese labels use full-width punctuation on purpose)

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

# key: (zh, en)
_LABELS: dict[str, tuple[str, str]] = {
    "title": ("信融 · 企业自助门户", "Xinrong · Enterprise portal"),
    "enterprise": ("企业", "Enterprise"),
    "node": ("节点", "Node"),
    "nav.data": ("我的数据", "My data"),
    "nav.accesses": ("谁查询了我的数据", "Who accessed my data"),
    "nav.consents": ("我的授权", "My consents"),
    "nav.cases": ("异议与信用修复", "Objections and repairs"),
    "lang.switch": ("English", "中文"),
    "not_available": ("此节点暂不提供该功能", "Not available on this node"),
    "not_available.detail": (
        "节点或本客户端版本尚未支持：{feature}",
        "The node or this client does not offer it yet: {feature}",
    ),
    "error": ("操作未完成", "Not done"),
    "done": ("已完成", "Done"),
    "data.provider": ("数据提供方", "Provider"),
    "data.category": ("类别", "Category"),
    "data.as_of": ("数据截至", "Data as of"),
    "data.field": ("字段", "Field"),
    "data.value": ("数值", "Value"),
    "data.status": ("状态", "Status"),
    "data.not_held": ("该提供方没有关于本企业的记录", "This provider holds no record on the enterprise"),
    "data.unavailable": ("未响应的提供方", "Providers that did not answer"),
    "data.empty": ("暂无数据", "No data"),
    "data.none": ("（无）", "(none)"),
    "data.object": ("提出异议", "Object"),
    "data.repair": ("申请修复", "Apply for repair"),
    "data.public_title": ("节点公开信息", "Public records at the node"),
    "data.public_badge": ("公开", "public"),
    "data.public_help": (
        "以下为数据提供方发布到节点的公开（汇总模式）信息，任何已接入的机构无需授权即可查询；每次查询都记入审计日志。",
        "Public (aggregate-mode) records the providers published to the node: any registered institution may read "
        "them without consent, and every read is in the audit log.",
    ),
    "data.source": ("来源", "Source"),
    "data.version": ("版本", "Version"),
    "data.public_empty": ("节点上没有关于本企业的公开信息", "The node holds no public record on the enterprise"),
    "data.public_unavailable": ("此节点不提供公开信息", "This node does not serve public records"),
    "cat.market registration": ("市场主体登记", "market registration"),
    "cat.judicial": ("司法", "judicial"),
    "cat.tax": ("税务", "tax"),
    "cat.housing provident fund": ("住房公积金", "housing provident fund"),
    "cat.social insurance": ("社会保险", "social insurance"),
    "cat.real estate": ("不动产", "real estate"),
    "cat.utilities": ("水电气", "utilities"),
    "status.normal": ("正常", "normal"),
    "status.disputed": ("异议中", "disputed"),
    "status.repaired": ("已修复", "repaired"),
    "acc.time": ("时间", "Time"),
    "acc.institution": ("机构", "Institution"),
    "acc.self": ("本企业（自助查询）", "this enterprise (own request)"),
    "acc.show_own": ("同时显示本企业自己的 {n} 条请求", "Also show this enterprise's own {n} requests"),
    "acc.hide_own": ("只显示机构的查询", "Show institutions' accesses only"),
    "acc.method": ("操作", "Request"),
    "acc.consent": ("授权", "Consent"),
    "acc.fields": ("涉及字段", "Fields asked"),
    "acc.decision": ("结果", "Decision"),
    "acc.proof": ("日志证明", "Log proof"),
    "acc.proof_ok": ("已验证", "verified"),
    "acc.proof_help": (
        "每一行都已在本机用节点签名的检查点验证了默克尔包含证明。",
        "Each row's Merkle inclusion proof was checked here against a checkpoint signed by the node.",
    ),
    "acc.empty": ("暂无查询记录", "No access yet"),
    "acc.next_page": ("下一页 →", "Next page →"),
    "acc.first_page": ("← 第一页", "← First page"),
    "con.id": ("授权编号", "Consent"),
    "con.grantee": ("被授权机构", "Institution"),
    "con.purpose": ("用途", "Purpose"),
    "con.state": ("状态", "State"),
    "con.uses": ("已用/上限", "Uses"),
    "con.valid_until": ("有效期至", "Valid until"),
    "con.fields": ("授权范围", "Scope"),
    "con.actions": ("操作", "Actions"),
    "con.pause": ("暂停", "Pause"),
    "con.resume": ("恢复", "Resume"),
    "con.revoke": ("撤销", "Revoke"),
    "con.empty": ("暂无授权", "No consents"),
    "con.grant": ("新建授权", "Grant a consent"),
    "con.scope": ("授权字段（来自共享目录）", "Fields (from the shared catalog)"),
    "con.valid_days": ("有效天数", "Valid for (days)"),
    "con.max_uses": ("最多使用次数", "Maximum uses"),
    "con.submit": ("签名并授权", "Sign and grant"),
    "state.active": ("生效", "active"),
    "state.paused": ("已暂停", "paused"),
    "state.revoked": ("已撤销", "revoked"),
    "state.expired": ("已过期", "expired"),
    "state.unknown": ("未知", "unknown"),
    "purpose.loan_application": ("贷款申请", "loan application"),
    "purpose.post_loan_monitoring": ("贷后监测", "post-loan monitoring"),
    "purpose.credit_scoring": ("信用评分", "credit scoring"),
    "purpose.joint_modeling": ("联合建模", "joint modeling"),
    "purpose.matching": ("融资需求推送与产品匹配", "financing demand and product matching"),
    "case.kind": ("类型", "Kind"),
    "case.objection": ("异议申诉", "objection"),
    "case.repair": ("信用修复", "credit repair"),
    "case.field": ("字段", "Field"),
    "case.statement": ("说明", "Statement"),
    "case.evidence": ("证明材料（可选）", "Evidence (optional)"),
    "case.state": ("进度", "State"),
    "case.filed": ("提交时间", "Filed"),
    "case.history": ("处理记录", "History"),
    "case.overdue": ("已超期", "overdue"),
    "case.effective": ("生效日期", "effective"),
    "case.file": ("提交异议或修复申请", "File an objection or a repair application"),
    "case.submit": ("签名并提交", "Sign and file"),
    "case.empty": ("暂无异议或修复申请", "No objections or repair applications"),
    "cstate.open": ("处理中", "open"),
    "cstate.corrected": ("已更正", "corrected"),
    "cstate.rejected": ("已驳回", "rejected"),
    "cstate.approved": ("已批准", "approved"),
    "nav.products": ("贷款产品", "Loan products"),
    "prod.help": (
        "各银行公开的贷款产品。是否符合条件由各数据提供方在本方数据上判断，结果只加密给您本人；银行只在您申请时得知您是否符合该产品。",
        "Products banks publish. Each provider checks its own rules on its own data and seals the result to you alone; "
        "a bank learns whether you are eligible only for a product you apply to.",
    ),
    "prod.empty": ("暂无已发布的贷款产品", "No loan products published"),
    "prod.bank": ("银行", "Bank"),
    "prod.name": ("产品", "Product"),
    "prod.amount": ("金额（元）", "Amount (CNY)"),
    "prod.term": ("期限（月）", "Term (months)"),
    "prod.rate": ("利率（基点）", "Rate (bps)"),
    "prod.rules": ("准入条件", "Eligibility rules"),
    "prod.result": ("我的匹配结果", "My match"),
    "prod.eligible": ("符合", "eligible"),
    "prod.not_eligible": ("不符合", "not eligible"),
    "prod.unmatched": ("未匹配（请授予该银行“匹配”授权）", "not matched yet (grant the bank a matching consent)"),
    "prod.failed": ("未满足", "failed"),
    "prod.apply": ("申请", "Apply"),
    "prod.purpose": ("用途", "Purpose"),
    "prod.region": ("地区", "Region"),
    "footer": (
        "本页面只在本机 127.0.0.1 提供；密钥只在本机进程中使用，从不进入页面。",
        "Served on 127.0.0.1 only; the key is used by this local process and never reaches the page.",
    ),
}


def pick_lang(query: str | None, cookie: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGS:
            return candidate
    return DEFAULT_LANG


def category(lang: str, name: str) -> str:
    """A catalog category in ``lang``; a category this table lacks shows as the catalog names it."""
    key = f"cat.{name}"
    return label(lang, key) if key in _LABELS else name


def label(lang: str, key: str, **kwargs: object) -> str:
    """The label in ``lang``; an unknown key shows itself (visible in review, never a crash)."""
    pair = _LABELS.get(key)
    if pair is None:
        return key
    text = pair[0] if lang == "zh" else pair[1]
    return text.format(**kwargs) if kwargs else text


def label_keys() -> frozenset[str]:
    return frozenset(_LABELS)
