"""Structured answers grounded in the request: quoted sentences, real reference ids, verdicts that agree.

A document reviewed against a list of controls, through the unmodified SDK against the emulator
(the example DAG's own compliance schema is checked in ``tests/test_example_assets.py``; this one
names its fields differently on purpose): every issue quotes a sentence of the document, names the
control that sentence is about and cites that control's text; a sentence stating a longer time than
its control allows is an issue; ``passed`` is true exactly when there are none; the overview starts
from the title.
"""

from __future__ import annotations

from typing import Literal

from emulator_helpers import MODEL, client
from pydantic import BaseModel, Field

from airflow_provider_claude_batch.testing.emulator import EmulatorServer
from airflow_provider_claude_batch.testing.responder.grounding import Grounding, field_role

CONTROLS = """# Security controls

- SEC-2 Retention periods are stated and no longer than necessary (maximum 24 months).
- SEC-4 Security incidents involving personal data are reported to the DPO within 24 hours.
- SEC-7 Access to production personal data is role-based and logged.
"""
DOCUMENT = """Document: hosting.md

# Hosting Terms: Skyline Cloud

Skyline hosts virtual machines and object storage for the Customer.
Security incidents affecting customer data are notified within
72 hours of discovery.

- Retention: customer records are deleted 30 days after the contract ends.
"""


class Issue(BaseModel):
    ref: str = Field(description="The control id, e.g. SEC-10")
    risk: Literal["red", "amber", "green"]
    quote: str
    remediation: str


class Review(BaseModel):
    issues: list[Issue]
    passed: bool
    overview: str


def review(document: str) -> tuple[Review, str]:
    output_config = {"format": {"type": "json_schema", "schema": Review.model_json_schema()}}
    with EmulatorServer() as emulator:
        message = client(emulator).messages.create(
            model=MODEL,
            max_tokens=2048,
            system="You review documents. Check the document against every control:\n\n" + CONTROLS,
            messages=[{"role": "user", "content": document}],
            extra_body={"output_config": output_config},
        )
    text = message.content[0].text
    return Review.model_validate_json(text), text


def test_issues_quote_the_document_and_name_the_control_they_are_about():
    verdict, raw = review(DOCUMENT)
    flat = " ".join(DOCUMENT.split())
    controls = {"SEC-2": "Retention periods", "SEC-4": "Security incidents", "SEC-7": "Access to production"}
    assert verdict.issues, raw
    for issue in verdict.issues:
        assert issue.quote in flat  # a sentence of the document, wrapped lines joined
        assert issue.ref in controls
        assert controls[issue.ref] in issue.remediation
    # "within 72 hours" against "within 24 hours": an issue, about SEC-4, quoting that sentence.
    incident = [issue.quote for issue in verdict.issues if issue.ref == "SEC-4"]
    assert incident == ["Security incidents affecting customer data are notified within 72 hours of discovery."]
    # 30 days is within the 24 months SEC-2 allows: no issue about it.
    assert all("30 days" not in issue.quote for issue in verdict.issues)
    assert verdict.passed is False
    assert verdict.overview.startswith("Hosting Terms: Skyline Cloud:") and "SEC-4" in verdict.overview


def test_a_verdict_agrees_with_its_list_and_the_answer_is_stable():
    document = "# Access Standard\n\nEngineers get production access only through an audited role."
    verdict, text = review(document)
    # Nothing states a time to compare; whether a sentence with none is flagged is a stable hash of it.
    assert verdict.passed is (verdict.issues == [])
    assert verdict.overview.startswith("Access Standard:")
    assert review(document)[1] == text  # the same request, the same answer, byte for byte


def test_grounding_reads_markdown_units_and_the_reference_list():
    grounding = Grounding.from_params({"system": CONTROLS, "messages": [{"role": "user", "content": DOCUMENT}]})
    assert grounding.title == "Hosting Terms: Skyline Cloud"
    assert set(grounding.catalogue) == {"SEC-2", "SEC-4", "SEC-7"}
    assert "Document: hosting.md" not in grounding.lines  # a label, not a passage
    assert grounding.related_id("Retention: customer records are deleted 30 days after the contract ends.") == "SEC-2"
    assert grounding.exceeds("notified within 72 hours", "SEC-4") is True
    assert grounding.exceeds("deleted 30 days after", "SEC-2") is False
    assert grounding.exceeds("stored in Frankfurt", "SEC-2") is None
    assert field_role("checklist_item", {}) == "identifier" and field_role("evidence", {}) == "passage"
    assert field_role("ref", {"description": "The control id, e.g. SEC-10"}) == "identifier"
    assert field_role("name", {}) == "text"
