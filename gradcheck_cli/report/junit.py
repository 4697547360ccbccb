"""The ``--junit-xml`` report: one testcase per checked component.

Written with the standard library's ElementTree in the shape Jenkins, GitLab and GitHub
test reporters read: ``<testsuites><testsuite><testcase classname name time>`` with a
``<failure>`` (FAIL, XPASS) or ``<error>`` (ERROR) carrying the diagnosis, and
``<skipped>`` for an expected failure (XFAIL), as pytest writes it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gradcheck_cli.report import write_text
from gradcheck_cli.results import RunResult, Verdict

# ANSI colour codes, then anything XML 1.0 cannot hold (NUL, other C0 controls, surrogates).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    """Text that any XML parser accepts: colour codes dropped, other illegal characters escaped."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", _ANSI.sub("", text))


def _message(row_text: str) -> str:
    row_text = _clean(row_text)
    return row_text if len(row_text) < 2000 else row_text[:1997] + "..."


def render(result: RunResult, suite_name: str = "gradcheck", elapsed: float = 0.0) -> str:
    """The JUnit XML document for ``result``."""
    counts = result.summary()
    failures = counts["FAIL"] + counts["XPASS"]
    suites = ET.Element("testsuites", name=suite_name, tests=str(len(result.results)),
                        failures=str(failures), errors=str(counts["ERROR"]), time=f"{elapsed:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=suite_name, tests=str(len(result.results)),
                          failures=str(failures), errors=str(counts["ERROR"]),
                          skipped=str(counts["XFAIL"]), time=f"{elapsed:.3f}")
    for row in result.results:
        what = f"{row.component} wrt {row.wrt}" if row.wrt else row.component  # a layer: one case per argument
        name = what if row.convention in ("", row.component) else f"{what} ({row.convention})"
        case = ET.SubElement(suite, "testcase", classname=_clean(row.check), name=_clean(name), time="0")
        worst = row.worst_entry or list(row.worst_index or [])
        figures = (f"max abs error {row.max_abs_error}, max rel error {row.max_rel_error}, "
                   f"tolerance {row.tolerance}, worst entry {worst}")
        detail = f"{row.diagnosis}\n{figures}\norigin: {row.origin}\nreproduce: {row.reproduce}"
        if row.verdict in (Verdict.FAIL, Verdict.XPASS):
            node = ET.SubElement(case, "failure", message=_message(row.diagnosis or row.verdict.value),
                                 type=row.verdict.value)
            node.text = _clean(detail)
        elif row.verdict is Verdict.ERROR:
            node = ET.SubElement(case, "error", message=_message(row.diagnosis), type="ERROR")
            node.text = _clean(detail)
        elif row.verdict is Verdict.XFAIL:
            ET.SubElement(case, "skipped", message=_message(f"expected failure: {row.diagnosis}"),
                          type="pytest.xfail")
        elif row.verdict is Verdict.KINK:
            out = ET.SubElement(case, "system-out")
            out.text = _clean(f"KINK: {row.diagnosis}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write(result: RunResult, path: str, elapsed: float = 0.0) -> None:
    """Write the JUnit XML to ``path``; ``-`` means standard output."""
    write_text(render(result, elapsed=elapsed), path, "JUnit")
