"""Prints test counts and every skipped test with its reason from pytest's JUnit XML.

Exits 1 when the file is missing or no test ran, so CI can never pass on an empty run.
"""

import sys
import xml.etree.ElementTree as ET  # noqa: S405 - our own pytest output, not untrusted input
from pathlib import Path

path = Path(sys.argv[1])
if not path.exists():
    print(f"no test report at {path}: the test run did not complete")
    sys.exit(1)
root = ET.parse(path).getroot()  # noqa: S314
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
total = sum(int(s.get("tests", 0)) for s in suites)
failures = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = [
    (case.get("classname", "") + "::" + case.get("name", ""), skip.get("message", ""))
    for case in root.iter("testcase")
    for skip in case.findall("skipped")
]
print(f"tests: {total}, failed or errored: {failures}, skipped: {len(skipped)}")
for name, reason in skipped:
    print(f"  SKIPPED {name}: {reason}")
if total - len(skipped) <= 0:
    print("no test was executed: failing")
    sys.exit(1)
