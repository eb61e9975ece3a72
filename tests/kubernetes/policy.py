"""Checks deploy/kubernetes/*.yaml beyond the schemas (tests/kubernetes.rs runs it).

Usage: policy.py MANIFEST... -> prints a JSON report on stdout, exits 1 with one line per
violation on stderr. The report gives the Rust side what only it can check: every wgagent
command line (container command + args and exec probes, with the container's plain env values)
and the TOML files held in ConfigMaps.

The rules are the ones the README promises for the deployment: no capability, no privilege
escalation, non-root, read-only root file system, RuntimeDefault seccomp, no host namespaces or
host paths, probes that need no TCP API (exec only), only UDP on the network, and one UDP
Service per StatefulSet replica.
"""

import json
import sys

import yaml

violations = []


def bad(where, what):
    violations.append(f"{where}: {what}")


def pod_specs(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        yield doc["spec"]
    elif kind in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        yield doc["spec"]["template"]["spec"]


def check_pod(where, spec, report):
    sc = spec.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        bad(where, "pod securityContext.runAsNonRoot is not true")
    if sc.get("runAsUser", 0) == 0:
        bad(where, "pod runs as uid 0 or does not say")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad(where, "pod seccompProfile is not RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad(where, f"{key} is set")
    for vol in spec.get("volumes", []):
        if "hostPath" in vol:
            bad(where, f"volume {vol['name']} is a hostPath")
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    for c in containers:
        cw = f"{where} container {c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            bad(cw, "readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad(cw, "allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            bad(cw, "privileged")
        caps = csc.get("capabilities", {})
        if caps.get("drop") != ["ALL"]:
            bad(cw, f"capabilities.drop is {caps.get('drop')}, not [ALL]")
        if caps.get("add"):
            bad(cw, f"capabilities.add {caps['add']}")
        if csc.get("runAsUser") == 0:
            bad(cw, "runs as uid 0")
        for port in c.get("ports", []):
            if port.get("protocol") != "UDP":
                bad(cw, f"port {port.get('containerPort')} is not UDP")
            if "hostPort" in port:
                bad(cw, "hostPort")
        env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
        # No command: the image's entrypoint (the wgagent image's is the binary).
        command = c.get("command") or (
            ["/usr/local/bin/wgagent"] if c.get("image", "").startswith("wgagent") else []
        )
        argv = list(command) + list(c.get("args", []))
        runs_wgagent = bool(argv) and argv[0].endswith("/wgagent")
        if runs_wgagent:
            report["commands"].append({"where": cw, "argv": argv, "env": env})
        health_probe = False
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if p is None:
                continue
            if set(p) & {"httpGet", "tcpSocket", "grpc"}:
                bad(cw, f"{probe} is not an exec probe")
            elif "exec" in p:
                probe_argv = p["exec"]["command"]
                health_probe |= probe_argv[1:3] == ["health", "--local"]
                report["commands"].append(
                    {"where": f"{cw} {probe}", "argv": probe_argv, "env": env}
                )
        if runs_wgagent and argv[1:2] in (["agent"], ["control"]) and not health_probe:
            bad(cw, "runs wgagent without a `wgagent health --local` probe")


def main():
    report = {"configs": {}, "commands": [], "services": [], "statefulsets": []}
    docs = []
    for path in sys.argv[1:]:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path, doc))
    for path, doc in docs:
        where = f"{path} {doc['kind']}/{doc['metadata']['name']}"
        for spec in pod_specs(doc):
            check_pod(where, spec, report)
        if doc["kind"] == "ConfigMap":
            for name, text in doc.get("data", {}).items():
                if name.endswith(".toml"):
                    report["configs"][name] = text
        if doc["kind"] == "Service":
            spec = doc["spec"]
            for port in spec.get("ports", []):
                if port.get("protocol") != "UDP":
                    bad(where, f"port {port.get('port')} is not UDP")
            report["services"].append(
                {"name": doc["metadata"]["name"], "selector": spec.get("selector", {})}
            )
        if doc["kind"] == "StatefulSet":
            report["statefulsets"].append(
                {"name": doc["metadata"]["name"], "replicas": doc["spec"].get("replicas", 1)}
            )
    # One Service per replica, selecting exactly that pod by the label Kubernetes sets.
    for sts in report["statefulsets"]:
        for i in range(sts["replicas"]):
            pod = f"{sts['name']}-{i}"
            matching = [
                s for s in report["services"]
                if s["selector"] == {"statefulset.kubernetes.io/pod-name": pod}
            ]
            if len(matching) != 1:
                bad(sts["name"], f"{len(matching)} Services select replica {pod}, want 1")
    print(json.dumps(report))
    for v in violations:
        print(v, file=sys.stderr)
    sys.exit(1 if violations else 0)


main()
