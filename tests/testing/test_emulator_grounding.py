"""Structured answers grounded in the request: quoted sentences, real reference ids, verdicts that agree.

A document audited against a checklist, through the unmodified SDK against the emulator: every
finding quotes a sentence of the document, names the checklist item that sentence is about and
recommends that item's text; a sentence stating a longer time than its item allows is a finding;
``compliant`` is true exactly when there are no findings; the summary starts from the title.
"""

from __future__ import annotations

from typing import Literal

from emulator_helpers import MODEL, client
from pydantic import BaseModel, Field

from airflow_provider_claude_batch.testing.responder.grounding import Grounding, field_role

CHECKLIST = """# Handling checklist

- DH-2 Retention periods are stated and no longer than necessary (maximum 24 months).
- DH-4 Security incidents involving personal data are reported to the DPO within 24 hours.
- DH-7 Access to production personal data is role-based and logged.
"""
DOCUMENT = """Document: hosting.md

# Hosting Terms: Skyline Cloud

Skyline hosts virtual machines and object storage for the Customer.
Security incidents affecting customer data are notified within
72 hours of discovery.

- Retention: customer records are deleted 30 days after the contract ends.
"""


class Finding(BaseModel):
    checklist_item: str = Field(description="The checklist id, e.g. DH-2")
    severity: Literal["critical", "high", "medium", "low"]
    evidence: str = Field(description="The passage of the document that shows the problem")
    recommendation: str


class DocumentAudit(BaseModel):
    compliant: bool
    summary: str
    findings: list[Finding]


def audit(document: str) -> tuple[DocumentAudit, str]:
    from airflow_provider_claude_batch.testing.emulator import EmulatorServer

    with EmulatorServer() as emulator:
        message = client(emulator).messages.create(
            model=MODEL,
            max_tokens=2048,
            system="You are an auditor. Check the document against every item:\n\n" + CHECKLIST,
            messages=[{"role": "user", "content": document}],
            extra_body={
                "output_config": {"format": {"type": "json_schema", "schema": DocumentAudit.model_json_schema()}}
            },
        )
    return DocumentAudit.model_validate_json(message.content[0].text), message.content[0].text


def test_findings_quote_the_document_and_name_the_item_they_are_about():
    verdict, raw = audit(DOCUMENT)
    flat = " ".join(DOCUMENT.split())
    items = {"DH-2": "Retention periods", "DH-4": "Security incidents", "DH-7": "Access to production"}
    assert verdict.findings, raw
    for finding in verdict.findings:
        assert finding.evidence in flat  # a sentence of the document, wrapped lines joined
        assert finding.checklist_item in items
        assert items[finding.checklist_item] in finding.recommendation
    # "within 72 hours" against "within 24 hours": a finding, about DH-4, quoting that sentence.
    incident = [f for f in verdict.findings if f.checklist_item == "DH-4"]
    assert [f.evidence for f in incident] == [
        "Security incidents affecting customer data are notified within 72 hours of discovery."
    ]
    # 30 days is within the 24 months DH-2 allows: no finding about it.
    assert all("30 days" not in f.evidence for f in verdict.findings)
    assert verdict.compliant is False
    assert verdict.summary.startswith("Hosting Terms: Skyline Cloud:") and "DH-4" in verdict.summary


def test_a_document_with_nothing_to_flag_is_compliant_and_says_so():
    document = "# Access Standard\n\nEngineers get production access only through an audited role."
    verdict, _ = audit(document)
    # Nothing states a time to compare; whether a sentence with none is flagged is a stable hash of it.
    assert verdict.compliant is (verdict.findings == [])
    assert verdict.summary.startswith("Access Standard:")
    assert audit(document)[1] == audit(document)[1]  # the same request, the same answer, byte for byte


def test_grounding_reads_markdown_units_and_the_reference_list():
    params = {"system": CHECKLIST, "messages": [{"role": "user", "content": DOCUMENT}]}
    grounding = Grounding.from_params(params)
    assert grounding.title == "Hosting Terms: Skyline Cloud"
    assert set(grounding.catalogue) == {"DH-2", "DH-4", "DH-7"}
    assert "Document: hosting.md" not in grounding.lines  # a label, not a passage
    assert grounding.related_id("Retention: customer records are deleted 30 days after the contract ends.") == "DH-2"
    assert grounding.exceeds("notified within 72 hours", "DH-4") is True
    assert grounding.exceeds("deleted 30 days after", "DH-2") is False
    assert grounding.exceeds("stored in Frankfurt", "DH-2") is None
    assert field_role("checklist_item", {}) == "identifier" and field_role("evidence", {}) == "passage"
    assert field_role("ref", {"description": "The control id, e.g. SEC-10"}) == "identifier"
    assert field_role("name", {}) == "text"
