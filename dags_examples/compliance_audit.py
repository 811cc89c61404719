"""Weekly compliance audit: every document of a corpus checked against a policy checklist.

Nobody waits on a weekly audit: the report is read on Monday morning, so it runs on the Message
Batches API at half price. Each document gets a structured verdict (a pydantic model: findings
with a severity), one batch per document set (dynamic task mapping), and a report in Markdown and
as a self-contained HTML page lists the counts by severity and the documents that need attention.

Runs offline against the emulator: ``claude-batch demo compliance_audit``.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, Asset, task
from pydantic import BaseModel, Field

from airflow_provider_claude_batch.operators.batch import ClaudeBatchOperator

DATA = Path(__file__).parent / "data" / "compliance"
AIRFLOW_HOME = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
AUDIT_FINDINGS = Asset(name="claude_compliance_findings", uri="file:///claude-batch/compliance_audit/findings")
SEVERITIES = ("critical", "high", "medium", "low")


class Finding(BaseModel):
    """One way a document falls short of one checklist item."""

    checklist_item: str = Field(description="The checklist id, e.g. DH-2")
    severity: Literal["critical", "high", "medium", "low"]
    evidence: str = Field(description="The passage of the document that shows the problem")
    recommendation: str


class DocumentAudit(BaseModel):
    """The verdict on one document."""

    compliant: bool
    summary: str
    findings: list[Finding]


SYSTEM_PROMPT = (
    "You are a data-protection auditor. Audit date: {{ ds }}. Check the document against every item of this "
    "checklist and report each shortfall as a finding with a severity; a document with no findings is compliant.\n\n"
    + (DATA / "checklist.md").read_text()
)

with DAG(
    dag_id="compliance_audit",
    description="Weekly audit of contracts and policies against the data-handling checklist, on Message Batches",
    schedule="0 6 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["claude", "batch", "compliance"],
) as dag:

    @task
    def document_sets() -> list[list[dict[str, str]]]:
        """One list of requests per folder of the corpus: each becomes its own mapped batch task."""
        sets = []
        for folder in sorted(p for p in (DATA / "corpus").iterdir() if p.is_dir()):
            requests = [
                {
                    "custom_id": f"{folder.name}-{re.sub(r'[^A-Za-z0-9_-]', '_', doc.stem)}"[:64],
                    "prompt": f"Document: {doc.name}\n\n{doc.read_text()}",
                }
                for doc in sorted(folder.glob("*.md"))
            ]
            sets.append(requests)
        return sets

    audit = ClaudeBatchOperator.partial(
        task_id="audit_documents",
        model="claude-sonnet-4-6",
        max_tokens=2048,
        system=SYSTEM_PROMPT,
        output_schema=DocumentAudit,
        # An audit with unreadable verdicts is not an audit: fail if more than one in ten is missing.
        max_failed_fraction=0.1,
        # Tokens of one weekly run (every document set), for `claude-batch audit`.
        usage_estimate={"model": "claude-sonnet-4-6", "input_tokens": 400_000, "output_tokens": 100_000},
    ).expand(requests=document_sets())

    # The Asset event comes from the report, not from the batches: once per run (not once per mapped
    # batch), and only after the report a downstream DAG would read exists.
    @task(outlets=[AUDIT_FINDINGS])
    def write_report(
        manifests: list[dict[str, Any]], ds: str | None = None, outlet_events: Any = None
    ) -> dict[str, Any]:
        """Counts by severity and the documents that need attention, as Markdown and HTML."""
        audits: dict[str, dict[str, Any]] = {}
        failures: dict[str, str] = {}
        for manifest in manifests:
            results = Path(manifest["results_uri"].removeprefix("file://"))
            for line in results.read_text().splitlines():
                row = json.loads(line)
                if row["status"] == "succeeded":
                    audits[row["custom_id"]] = row["output"]
                else:
                    failures[row["custom_id"]] = row["status"]
        by_severity = Counter(f["severity"] for audit in audits.values() for f in audit["findings"])
        attention = sorted(
            doc
            for doc, audit in audits.items()
            if not audit["compliant"] or any(f["severity"] in ("critical", "high") for f in audit["findings"])
        )
        cost = sum(m["cost"]["batch_usd"] for m in manifests)
        saving = sum(m["cost"]["saving_usd"] for m in manifests)
        out_dir = AIRFLOW_HOME / "compliance_reports" / (ds or "manual")
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = {
            "documents": len(audits) + len(failures),
            "audited": len(audits),
            "not_audited": failures,
            "findings_by_severity": {s: by_severity.get(s, 0) for s in SEVERITIES},
            "needs_attention": attention,
            "cost_usd_batch": round(cost, 6),
            "saving_usd": round(saving, 6),
            "report_markdown": str(out_dir / "report.md"),
            "report_html": str(out_dir / "report.html"),
        }
        (out_dir / "report.md").write_text(_markdown(summary, audits, ds))
        (out_dir / "report.html").write_text(_html(summary, audits, ds))
        if outlet_events is not None:
            outlet_events[AUDIT_FINDINGS].extra = {
                "report_markdown": summary["report_markdown"],
                "report_html": summary["report_html"],
                "needs_attention": len(attention),
            }
        print(json.dumps(summary, indent=2))
        return summary

    write_report(audit.output)


def _markdown(summary: dict[str, Any], audits: dict[str, dict[str, Any]], ds: str | None) -> str:
    lines = [f"# Compliance audit {ds or ''}".rstrip(), ""]
    lines.append(f"{summary['audited']} of {summary['documents']} documents audited.")
    lines.append("")
    lines.append("| severity | findings |")
    lines.append("|---|---|")
    lines += [f"| {severity} | {n} |" for severity, n in summary["findings_by_severity"].items()]
    lines += ["", "## Needs attention", ""]
    lines += [f"- **{doc}**: {audits[doc]['summary']}" for doc in summary["needs_attention"]] or ["- none"]
    if summary["not_audited"]:
        lines += ["", "## Not audited", ""]
        lines += [f"- {doc}: {status}" for doc, status in sorted(summary["not_audited"].items())]
    lines += ["", "## Findings", ""]
    for doc, audit in sorted(audits.items()):
        for finding in audit["findings"]:
            lines.append(f"- {doc} / {finding['checklist_item']} ({finding['severity']}): {finding['recommendation']}")
    lines += ["", f"Cost at batch prices: ${summary['cost_usd_batch']:.4f} (saved ${summary['saving_usd']:.4f})."]
    return "\n".join(lines) + "\n"


def _html(summary: dict[str, Any], audits: dict[str, dict[str, Any]], ds: str | None) -> str:
    esc = html.escape
    severity_rows = "".join(
        f"<tr><td class='{s}'>{s}</td><td>{n}</td></tr>" for s, n in summary["findings_by_severity"].items()
    )
    attention = "".join(
        f"<li><b>{esc(doc)}</b>: {esc(audits[doc]['summary'])}</li>" for doc in summary["needs_attention"]
    )
    findings = "".join(
        f"<tr><td>{esc(doc)}</td><td>{esc(f['checklist_item'])}</td><td class='{esc(f['severity'])}'>"
        f"{esc(f['severity'])}</td><td>{esc(f['evidence'])}</td><td>{esc(f['recommendation'])}</td></tr>"
        for doc, audit in sorted(audits.items())
        for f in audit["findings"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compliance audit {esc(ds or "")}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
.critical {{ background: #7f1d1d; color: #fff; }} .high {{ background: #dc2626; color: #fff; }}
.medium {{ background: #f59e0b; }} .low {{ background: #e5e7eb; }}
</style></head><body>
<h1>Compliance audit {esc(ds or "")}</h1>
<p>{summary["audited"]} of {summary["documents"]} documents audited.
Cost at batch prices ${summary["cost_usd_batch"]:.4f} (saved ${summary["saving_usd"]:.4f}).</p>
<h2>Findings by severity</h2><table><tr><th>severity</th><th>findings</th></tr>{severity_rows}</table>
<h2>Needs attention</h2><ul>{attention or "<li>none</li>"}</ul>
<h2>All findings</h2><table><tr><th>document</th><th>item</th><th>severity</th><th>evidence</th>
<th>recommendation</th></tr>{findings}</table>
</body></html>
"""
