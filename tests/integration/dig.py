"""dig (Debian's bind9-dnsutils) as the tests' DNS client, and its output read back."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

DIG = shutil.which("dig")
RECORD = re.compile(r"^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$")


@dataclass
class Answer:
    status: str  # NOERROR, NXDOMAIN, REFUSED...
    flags: set[str]  # qr, aa, tc...
    sections: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    transport: str = ""  # UDP or TCP, as dig says it asked
    text: str = ""

    def records(self, section: str, rdtype: str | None = None) -> list[tuple[str, str, str]]:
        """(owner, type, data) of a section's records, names in lower case."""
        return [r for r in self.sections.get(section, []) if rdtype is None or r[1] == rdtype]

    def data(self, section: str = "ANSWER", rdtype: str | None = None) -> list[str]:
        return [data for _, _, data in self.records(section, rdtype)]

    def srv(self) -> set[tuple[int, str]]:
        """(port, target) of the answer's SRV records."""
        found = set()
        for data in self.data("ANSWER", "SRV"):
            priority, weight, port, target = data.split()
            assert (priority, weight) == ("1", "1"), data
            found.add((int(port), target.lower()))
        return found


def dig(port: int, name: str, rdtype: str = "A", *options: str, timeout: float = 20) -> Answer:
    """One query with dig at 127.0.0.1:`port`; fails (never skips) when dig is missing."""
    assert DIG is not None, "dig is needed (Debian bind9-dnsutils): make setup installs it"
    args = [DIG, "@127.0.0.1", "-p", str(port), name, rdtype, "+time=3", "+tries=3", *options]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"dig failed ({done.returncode}): {done.stdout}{done.stderr}"
    return parse(done.stdout)


def parse(text: str) -> Answer:
    header = re.search(r"status: (\w+)", text)
    flags = re.search(r";; flags: ([a-z ]*)[;:]", text)
    assert header is not None and flags is not None, text
    server = re.search(r";; SERVER: .*\((UDP|TCP)\)", text)
    answer = Answer(header.group(1), set(flags.group(1).split()), text=text)
    answer.transport = server.group(1) if server else ""
    section = None
    for line in text.splitlines():
        heading = re.match(r";; (\w+) SECTION:", line)
        if heading:
            section = heading.group(1)
            answer.sections[section] = []
        elif section and (record := RECORD.match(line)):
            owner, _, rdtype, data = record.groups()
            answer.sections[section].append((owner.lower(), rdtype, data.strip()))
        elif not line.strip():
            section = None
    return answer
