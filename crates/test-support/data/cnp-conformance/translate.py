#!/usr/bin/env python3
"""Translates the ClusterNetworkPolicy conformance suite of kubernetes-sigs/network-policy-api
into tests.yaml beside this script, and copies the suite's manifests into base/.

Usage: translate.py UPSTREAM_CHECKOUT   (a checkout of the tag the data names, v0.2.0)

The upstream tests (conformance/tests/*.go) are Go code over a live cluster; this reads them
statement by statement and keeps exactly what they do, in order, as data:

- each ConformanceTest: its ShortName, Description, Features and Manifests, and its source
  file;
- each t.Run: its name, and its steps in the order they run:
  - `probe`: PokeServer's client pod, protocol, target pod (whose Status.PodIP is dialled) and
    port (a number, or an index into the suite's host-network ports), and whether it must
    connect;
  - the mutations a PatchClusterNetworkPolicy applies, one step each: `swap_rules` (two rules
    of a direction exchanged), `set_action`, `set_priority`, `set_protocols` (a rule's
    protocols replaced by a named port), `prepend_rule` (a rule inserted at index 0, with
    networks that name a pod's IP: `{{cidr ns/pod}}` is that pod's IP with /32 or /128);
  - `delete`: an object deleted (the NetworkPolicy of the integration test).

Mutations build on each other within a test, as upstream's do (each t.Run reads the current
object, changes it and patches it); every test starts from its manifests as applied.

Anything the reader does not recognise stops it with the file and line: a new upstream
statement must be translated by hand, never skipped. Needs only the Python standard library.
"""

import os
import re
import shutil
import sys

SOURCE_REPO = "https://github.com/kubernetes-sigs/network-policy-api"
TAG = "v0.2.0"
COMMIT = "a17adecd0316b8ff1c3f83939ec0441d68cd6cce"


class Untranslated(Exception):
    pass


def strip_comment(line):
    # No string literal in the tests holds "//" or "/*"; block comments fit on one line.
    line = re.sub(r"/\*.*?\*/", "", line)
    return line.split("//", 1)[0].rstrip()


def blocks(text):
    """(ShortName-var, body) of every `var X = suite.ConformanceTest{ ... }`."""
    out = []
    for m in re.finditer(r"^var (\w+) = suite\.ConformanceTest\{\n", text, re.M):
        depth, i = 1, m.end()
        while depth:
            c = text[i]
            depth += c == "{"
            depth -= c == "}"
            i += 1
        out.append((m.group(1), text[m.end():i - 1], text[: m.start()].count("\n") + 1))
    return out


POD = re.compile(
    r'(\w+) :?= kubernetes\.GetPod\(t, s\.Client, "([\w-]+)", "([\w-]+)", s\.TimeoutConfig\.GetTimeout\)$'
)
POKE = re.compile(
    r'kubernetes\.PokeServer\(t, s\.ClientSet, &s\.KubeConfig, "([\w-]+)", "([\w-]+)", "(tcp|udp|sctp)",\s*'
    r"(\w+)\.Status\.PodIP, int32\(([^)]+)\), s\.TimeoutConfig, (true|false)\)"
)
GET_CNP = re.compile(
    r'cnp := kubernetes\.GetClusterNetworkPolicy\(t, s\.Client, "([\w-]+)", s\.TimeoutConfig\.GetTimeout\)$'
)
TEMP = re.compile(r"(\w+) := mutate(?:\.DeepCopy\(\))?\.Spec\.(Egress|Ingress)\[(\d+)\]$")
MOVE = re.compile(r"mutate\.Spec\.(Egress|Ingress)\[(\d+)\] = mutate\.Spec\.(Egress|Ingress)\[(\d+)\]$")
PUT = re.compile(r"mutate\.Spec\.(Egress|Ingress)\[(\d+)\] = (\w+)$")
ACTION = re.compile(r"mutate\.Spec\.(Egress|Ingress)\[(\d+)\]\.Action = api\.ClusterNetworkPolicyRuleAction(\w+)$")
PRIORITY = re.compile(r"mutate\.Spec\.Priority = (\d+)$")
STRING = re.compile(r'(\w+) := "([\w-]+)"$')
NAMED = re.compile(
    r"(\w+)\.Protocols = \[\]api\.ClusterNetworkPolicyProtocol\{\s*\{\s*DestinationNamedPort: (\w+),\s*\},\s*\}$"
)
NEW_RULE = re.compile(
    r'newRule := \[\]api\.ClusterNetworkPolicyEgressRule\{\s*\{\s*Name:\s*"([\w-]+)",\s*Action:\s*"(\w+)",\s*'
    r"To: \[\]api\.ClusterNetworkPolicyEgressPeer\{\s*\{\s*Networks: \[\]api\.CIDR\{\s*((?:api\.CIDR\(\w+\.Status\.PodIP \+ mask\),\s*)+)\},\s*\},\s*\},\s*\},\s*\}$"
)
PREPEND = "mutate.Spec.Egress = append(newRule, mutate.Spec.Egress...)"
NP_GET = re.compile(
    r'err := s\.Client\.Get\(ctx, client\.ObjectKey\{\s*Namespace: "([\w-]+)",\s*Name:\s*"([\w-]+)",\s*\}, np\)$'
)
IGNORED = [
    re.compile(p)
    for p in [
        r"^mutate := cnp\.DeepCopy\(\)$",
        r"^var mask string$",
        r'^if net\.IsIPv4String\(\w+\.Status\.PodIP\) \{ mask = "/32" \} else \{ mask = "/128" \}$',
        r"^ctx, cancel := context\.WithTimeout\(context\.Background\(\), s\.TimeoutConfig\.GetTimeout\)$",
        r"^defer cancel\(\)$",
        r"^np := &networkingv1\.NetworkPolicy\{\}$",
        r'^require\.NoErrorf\(t, err, "[^"]*"\)$',
    ]
]


def statements(body, first_line, path):
    """The test function's statements, joined across lines, with the line each starts on."""
    lines = body.split("\n")
    out, current, start, depth = [], "", None, 0
    for n, raw in enumerate(lines):
        line = strip_comment(raw).strip()
        if not line:
            continue
        if start is None:
            start = first_line + n + 1
        current = f"{current} {line}".strip() if current else line
        depth += line.count("(") + line.count("{") - line.count(")") - line.count("}")
        if depth <= 0 or current.endswith("func(t *testing.T, s *suite.ConformanceTestSuite) {") or (
            current.startswith("t.Run(") and current.endswith("{")
        ):
            out.append((start, re.sub(r"\s+", " ", current)))
            current, start, depth = "", None, 0
    if current:
        raise Untranslated(f"{path}:{start}: unterminated statement: {current}")
    return out


def field(body, name):
    m = re.search(rf"^\t{name}:\s+(.+),$", body, re.M)
    return m.group(1) if m else None


def translate(checkout, path):
    text = open(os.path.join(checkout, path)).read()
    tests = []
    for var, body, line in blocks(text):
        short = field(body, "ShortName").strip('"')
        if short != var:
            raise Untranslated(f"{path}:{line}: ShortName {short} differs from {var}")
        features = re.findall(r"suite\.(Support\w+),", body)
        manifests = re.search(r'Manifests: \[\]string\{"([^"]+)"\}', body).group(1)
        test_at = body.index("Test: func(")
        steps_of = {"": []}
        subtests = []
        pods = {}
        strings = {}
        temps = {}
        pending = []
        policy = None
        named_rule = {}
        new_rule = None
        current = None
        for at, stmt in statements(body[test_at:], line + body[:test_at].count("\n"), path):
            where = f"{path}:{at}"
            if stmt.startswith("Test: func(") or stmt in ("}", "},", "})"):
                if stmt == "})":
                    current = None
                continue
            m = re.match(r't\.Run\("(.+)", func\(t \*testing\.T\) \{$', stmt)
            if m:
                current = {"name": m.group(1), "steps": []}
                subtests.append(current)
                continue
            m = POD.match(stmt)
            if m:
                pods[m.group(1)] = f"{m.group(2)}/{m.group(3)}"
                continue
            m = POKE.search(stmt)
            if m and stmt.startswith("kubernetes.PokeServer("):
                if current is None:
                    raise Untranslated(f"{where}: probe outside a t.Run")
                client_ns, client, protocol, target, port, expect = m.groups()
                if target not in pods:
                    raise Untranslated(f"{where}: unknown pod variable {target}")
                hm = re.fullmatch(r"s\.HostNetworkPorts\[(\d+)\]", port)
                port = {"host_network_port": int(hm.group(1))} if hm else int(port)
                current["steps"].append(
                    {
                        "probe": {
                            "from": f"{client_ns}/{client}",
                            "to": pods[target],
                            "protocol": protocol,
                            "port": port,
                            "connect": expect == "true",
                        }
                    }
                )
                continue
            m = GET_CNP.match(stmt)
            if m:
                policy = m.group(1)
                continue
            m = TEMP.match(stmt)
            if m:
                temps[m.group(1)] = (m.group(2).lower(), int(m.group(3)))
                continue
            m = MOVE.match(stmt)
            if m and m.group(1) == m.group(3):
                pending.append(("move", m.group(1).lower(), int(m.group(2)), int(m.group(4))))
                continue
            m = PUT.match(stmt)
            if m:
                direction, index, var = m.group(1).lower(), int(m.group(2)), m.group(3)
                if var in named_rule:
                    d, i, port = named_rule.pop(var)
                    if (d, i) != (direction, index):
                        raise Untranslated(f"{where}: named-port rule put back elsewhere")
                    pending.append(("named", direction, index, port))
                elif temps.get(var, (None,))[0] == direction:
                    pending.append(("put", direction, index, temps.pop(var)[1]))
                else:
                    raise Untranslated(f"{where}: {stmt}")
                continue
            m = ACTION.match(stmt)
            if m:
                pending.append(("action", m.group(1).lower(), int(m.group(2)), m.group(3)))
                continue
            m = PRIORITY.match(stmt)
            if m:
                pending.append(("priority", int(m.group(1))))
                continue
            m = STRING.match(stmt)
            if m:
                strings[m.group(1)] = m.group(2)
                continue
            m = NAMED.match(stmt)
            if m:
                var, port = m.group(1), strings[m.group(2)]
                if var not in temps:
                    raise Untranslated(f"{where}: protocols of an unknown rule {var}")
                named_rule[var] = (*temps.pop(var), port)
                continue
            m = NEW_RULE.match(stmt)
            if m:
                cidrs = [
                    "{{cidr " + pods[v] + "}}"
                    for v in re.findall(r"api\.CIDR\((\w+)\.Status\.PodIP \+ mask\)", m.group(3))
                ]
                new_rule = {"name": m.group(1), "action": m.group(2), "to": [{"networks": cidrs}]}
                continue
            if stmt == PREPEND:
                pending.append(("prepend", "egress", new_rule))
                new_rule = None
                continue
            if stmt.startswith("kubernetes.PatchClusterNetworkPolicy(t, s.Client, cnp, mutate,"):
                current["steps"].extend(mutation_steps(policy, pending, where))
                pending, temps = [], {}
                continue
            m = NP_GET.match(stmt)
            if m:
                deleting = {"kind": "NetworkPolicy", "namespace": m.group(1), "name": m.group(2)}
                continue
            if stmt == "err = s.Client.Delete(ctx, np)":
                current["steps"].append({"delete": deleting})
                continue
            if any(p.match(stmt) for p in IGNORED):
                continue
            raise Untranslated(f"{where}: not translated: {stmt}")
        if pending or temps or named_rule:
            raise Untranslated(f"{path}: {short}: mutations never patched: {pending} {temps}")
        tests.append(
            {
                "name": short,
                "source": path,
                "description": field(body, "Description").strip('"'),
                "features": [f.replace("Support", "", 1) for f in features],
                "manifests": [manifests],
                "subtests": subtests,
            }
        )
    return tests


def mutation_steps(policy, pending, where):
    """The patch's changes as steps: a temp-held swap (x := r[i]; r[i] = r[j]; r[j] = x)
    becomes one `swap_rules`."""
    steps, i = [], 0
    while i < len(pending):
        p = pending[i]
        if p[0] == "move":
            nxt = pending[i + 1] if i + 1 < len(pending) else None
            if not (nxt and nxt[0] == "put" and nxt[1] == p[1] and nxt[2] == p[3] and nxt[3] == p[2]):
                raise Untranslated(f"{where}: a rule moved without the matching swap")
            steps.append({"swap_rules": {"policy": policy, "direction": p[1], "a": p[2], "b": p[3]}})
            i += 2
            continue
        if p[0] == "action":
            steps.append(
                {"set_action": {"policy": policy, "direction": p[1], "rule": p[2], "action": p[3]}}
            )
        elif p[0] == "priority":
            steps.append({"set_priority": {"policy": policy, "priority": p[1]}})
        elif p[0] == "named":
            steps.append(
                {
                    "set_protocols": {
                        "policy": policy,
                        "direction": p[1],
                        "rule": p[2],
                        "protocols": [{"destinationNamedPort": p[3]}],
                    }
                }
            )
        elif p[0] == "prepend":
            steps.append({"prepend_rule": {"policy": policy, "direction": p[1], "rule": p[2]}})
        else:
            raise Untranslated(f"{where}: {p}")
        i += 1
    return steps


def yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def yaml(value, indent=0):
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.append(yaml(item, indent + 1))
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(item, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(item)}")
        return "\n".join(lines)
    lines = []
    for item in value:
        if isinstance(item, (dict, list)):
            inner = yaml(item, indent + 1).split("\n")
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines.extend(inner[1:])
        else:
            lines.append(f"{pad}- {yaml_scalar(item)}")
    return "\n".join(lines)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    checkout = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    paths = sorted(
        os.path.join("conformance/tests", f)
        for f in os.listdir(os.path.join(checkout, "conformance/tests"))
        if f.endswith(".go") and f != "main.go"
    )
    tests = []
    for path in paths:
        tests.extend(translate(checkout, path))
    base = os.path.join(here, "base")
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(os.path.join(checkout, "conformance/base"), base)
    subtests = sum(len(t["subtests"]) for t in tests)
    probes = sum(1 for t in tests for s in t["subtests"] for step in s["steps"] if "probe" in step)
    header = f"""# The ClusterNetworkPolicy conformance suite of {SOURCE_REPO}
# at {TAG} ({COMMIT}), conformance/tests/*.go, as data: {len(tests)} tests,
# {subtests} sub-tests, {probes} probes. Generated by translate.py from the upstream files (each
# test names its source); the manifests are in base/, copied unchanged. Do not edit by hand:
# fix translate.py and run it again on a checkout of the tag.
"""
    data = {
        "source": {"repository": SOURCE_REPO, "tag": TAG, "commit": COMMIT},
        "base_manifests": "base/manifests.yaml",
        "host_network_ports": list(range(34345, 34345 + 8)),
        "tests": tests,
    }
    with open(os.path.join(here, "tests.yaml"), "w") as out:
        out.write(header + yaml(data) + "\n")
    print(f"{len(tests)} tests, {subtests} sub-tests, {probes} probes")


if __name__ == "__main__":
    try:
        main()
    except Untranslated as e:
        sys.exit(f"translate.py: {e}")
