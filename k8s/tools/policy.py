"""Rules a schema cannot express, checked on a rendered overlay.

Usage: policy.py RENDERED.yaml NAME [--production]
Run by scripts/check-k8s.sh with the venv's Python (PyYAML comes with
kubernetes-validate). Prints one line per violation and exits 1 if any.
"""

import re
import sys

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
# Kinds kubernetes-validate has no schema for (CRDs); what is checked about
# them instead is below, in check_service_monitors.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def main():
    path, name = sys.argv[1], sys.argv[2]
    production = "--production" in sys.argv[3:]
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    errors = []

    def bad(obj, msg):
        errors.append(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {msg}")

    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    for d in docs:
        if d["kind"] in WORKLOADS:
            check_workload(d, configmaps, production, bad)
        if d["kind"] == "HorizontalPodAutoscaler" and production and d["spec"].get("minReplicas", 1) < 2:
            bad(d, "production HPA must keep at least 2 replicas")
    check_service_monitors(docs, bad)
    check_relay_ports(docs, configmaps, bad)
    for e in errors:
        print(e)
    sys.exit(1 if errors else 0)


def check_workload(d, configmaps, production, bad):
    pod = d["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        bad(d, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad(d, "pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        bad(d, "automountServiceAccountToken must be false")
    for c in pod.get("initContainers", []) + pod["containers"]:
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    bad(d, f"container {c['name']}: resources.{kind}.{r} missing")
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(d, f"container {c['name']}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(d, f"container {c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            bad(d, f"container {c['name']}: capabilities must drop ALL")
        image = c["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if production and "@sha256:" not in image and tag in ("", "latest"):
            bad(d, f"container {c['name']}: production image {image} must be pinned")
        for ref in c.get("envFrom", []):
            cm = ref.get("configMapRef", {}).get("name")
            if cm is not None and cm not in configmaps:
                bad(d, f"container {c['name']}: ConfigMap {cm} is not in the render")
        if c["name"] == "tallow-server":
            check_drain(d, pod, c, configmaps, bad)


def check_drain(d, pod, c, configmaps, bad):
    """The kubelet must not SIGKILL before preStop plus the server's drain."""
    env = {}
    for ref in c.get("envFrom", []):
        env.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
    drain = int(env.get("TALLOW_SHUTDOWN_TIMEOUT_SECS", "10"))
    pre = c.get("lifecycle", {}).get("preStop", {})
    pause = pre.get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not pre:
        bad(d, "tallow-server needs a preStop pause before SIGTERM")
    if grace <= pause + drain:
        bad(d, f"terminationGracePeriodSeconds {grace} must exceed preStop {pause} s + drain {drain} s")
    probes = {
        "livenessProbe": "/api/health/liveness",
        "readinessProbe": "/api/health/readiness",
    }
    for probe, want in probes.items():
        got = c.get(probe, {}).get("httpGet", {}).get("path")
        if got != want:
            bad(d, f"tallow-server {probe} must call {want}, not {got}")


def check_relay_ports(docs, configmaps, bad):
    """The relay's NetworkPolicy and any LoadBalancer in front of it must
    open exactly TURN_LISTEN's port and TURN_PORT_RANGE (relay.env)."""
    relay_env = {}
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "tallow-relay":
            for ref in d["spec"]["template"]["spec"]["containers"][0].get("envFrom", []):
                relay_env.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
    if not relay_env:
        return
    listen = int(relay_env["TURN_LISTEN"].rsplit(":", 1)[1])
    low, high = (int(x) for x in relay_env["TURN_PORT_RANGE"].split("-"))
    want_udp = {listen} | set(range(low, high + 1))
    for d in docs:
        selects_relay = (
            d["kind"] == "NetworkPolicy"
            and d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "tallow-relay"
        )
        if selects_relay:
            got = set()
            for rule in d["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    if p.get("protocol") == "UDP":
                        got |= set(range(p["port"], p.get("endPort", p["port"]) + 1))
            if got != want_udp:
                bad(d, f"UDP ports {describe(got)} differ from TURN_LISTEN + TURN_PORT_RANGE {describe(want_udp)}")
        fronts_relay = (
            d["kind"] == "Service"
            and d["spec"].get("type") == "LoadBalancer"
            and d["spec"].get("selector", {}).get("app.kubernetes.io/name") == "tallow-relay"
        )
        if fronts_relay:
            got = {p["port"] for p in d["spec"]["ports"] if p.get("protocol") == "UDP"}
            if got != want_udp:
                bad(d, f"UDP ports {describe(got)} differ from TURN_LISTEN + TURN_PORT_RANGE {describe(want_udp)}")


def describe(ports):
    ports = sorted(ports)
    return f"{len(ports)} ports {ports[0]}..{ports[-1]}" if ports else "none"


def check_service_monitors(docs, bad):
    """No schema exists here for ServiceMonitor: check what it refers to."""
    services = [d for d in docs if d["kind"] == "Service"]
    for sm in docs:
        if (sm["apiVersion"], sm["kind"]) not in CRD_KINDS:
            continue
        spec = sm.get("spec", {})
        unknown = set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        if unknown:
            bad(sm, f"unexpected spec fields {sorted(unknown)}")
        names = spec.get("namespaceSelector", {}).get("matchNames", [sm["metadata"].get("namespace")])
        want = spec.get("selector", {}).get("matchLabels", {})
        matched = [
            s
            for s in services
            if s["metadata"].get("namespace") in names
            and want
            and all(s["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
        ]
        if not matched:
            bad(sm, f"selector {want} matches no Service in {names}")
        for ep in spec.get("endpoints", []):
            extra = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
            if extra:
                bad(sm, f"unexpected endpoint fields {sorted(extra)}")
            for s in matched:
                ports = {p.get("name") for p in s["spec"]["ports"]}
                if ep.get("port") not in ports:
                    bad(sm, f"port {ep.get('port')!r} not on Service {s['metadata']['name']}")
            if "interval" in ep and not re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["interval"]):
                bad(sm, f"interval {ep['interval']!r} is not a duration")


if __name__ == "__main__":
    main()
