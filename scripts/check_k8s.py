"""What scripts/check-k8s checks in deploy/k8s/: every resource against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail) or, for KEDA's ScaledObject, against the
schema vendored in deploy/k8s/schemas/; then what a schema cannot see: probes on the ports the
settings give, resource requests, drain time, PodDisruptionBudgets and the autoscaler pointing
at existing Deployments, the autoscaler's triggers, and kustomization.yaml listing every
manifest.

usage: check_k8s.py [KUBERNETES_VERSION]
"""

import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

from check_compose import emitted_metrics, metric_names

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
VERSION = sys.argv[1] if len(sys.argv) > 1 else "1.30.0"
VENDORED = {("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-scaledobject-v1alpha1.json"}
# Bounds of the shutdown drain in the code: the gateway closes and records its sockets for up
# to 5 s (SOCKET_DRAIN); a worker finishes its report job, which waits up to REPORT_WAIT_SECONDS.
SOCKET_DRAIN_S = 5
DRAIN_MARGIN_S = 10

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def load():
    resources, files = [], []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        files.append(path.name)
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                resources.append((path.name, doc))
    return resources, files


def validate(name, doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if key in VENDORED:
        schema = json.loads((K8S / "schemas" / VENDORED[key]).read_text())
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        return
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        problems.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError:
        problems.append(f"{where}: no schema for {key} (vendor one in deploy/k8s/schemas/)")


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def probe_port(container, probe):
    port = container.get(probe, {}).get("httpGet", {}).get("port")
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def check_deployment(doc, config):
    name = doc["metadata"]["name"]
    spec = doc["spec"]["template"]["spec"]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    for c in spec["containers"]:
        role = c.get("args", ["gateway"])[0]
        want_port = port_of(config["WORKER_BIND_ADDR" if role == "worker" else "BIND_ADDR"])
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/livez")):
            check(c.get(probe, {}).get("httpGet", {}).get("path") == path,
                  f"{name}: {probe} must ask {path}")
            check(probe_port(c, probe) == want_port,
                  f"{name}: {probe} must use port {want_port} (the {role}'s bind address)")
        requests = c.get("resources", {}).get("requests", {})
        check({"cpu", "memory"} <= set(requests), f"{name}: cpu and memory requests missing")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_s = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        drain = SOCKET_DRAIN_S if role == "gateway" else float(config.get("REPORT_WAIT_SECONDS", 5))
        check(grace >= pre_stop_s + drain + DRAIN_MARGIN_S,
              f"{name}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_s} s + drain "
              f"{drain} s + {DRAIN_MARGIN_S} s")
    return role


def check_scaled_object(doc, deployments, emitted):
    target = doc["spec"]["scaleTargetRef"]["name"]
    check(deployments.get(target) == "worker", f"ScaledObject scales {target!r}, not the worker Deployment")
    triggers = {t["type"]: t["metadata"] for t in doc["spec"]["triggers"]}
    js = triggers.get("nats-jetstream", {})
    check(js.get("stream") == "INSIDE_JOBS" and js.get("consumer") == "report-writers",
          "ScaledObject needs a nats-jetstream trigger on INSIDE_JOBS / report-writers")
    query = triggers.get("prometheus", {}).get("query", "")
    check(bool(query), "ScaledObject needs a prometheus trigger on frame load")
    for m in metric_names(query):
        check(m in emitted, f"ScaledObject's query reads {m!r}, which the code does not emit")


def main():
    resources, files = load()
    for name, doc in resources:
        validate(name, doc)
    config = next(d["data"] for _, d in resources if d["kind"] == "ConfigMap")
    deployments = {d["metadata"]["name"]: check_deployment(d, config)
                   for _, d in resources if d["kind"] == "Deployment"}
    labels = {d["metadata"]["name"]: d["spec"]["selector"]["matchLabels"]
              for _, d in resources if d["kind"] == "Deployment"}
    pdbs = [d for _, d in resources if d["kind"] == "PodDisruptionBudget"]
    for role in ("gateway", "worker"):
        covered = [p for p in pdbs for dep, r in deployments.items()
                   if r == role and p["spec"]["selector"]["matchLabels"] == labels[dep]]
        check(bool(covered), f"no PodDisruptionBudget selects the {role} pods")
    scaled = [d for _, d in resources if d["kind"] == "ScaledObject"]
    check(len(scaled) == 1, "one KEDA ScaledObject for the workers expected")
    for d in scaled:
        check_scaled_object(d, deployments, emitted_metrics())
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    for f in files:
        check(f in listed or f.endswith(".example.yaml"), f"kustomization.yaml does not list {f}")
    if problems:
        for p in problems:
            print(f"check-k8s: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check-k8s: {len(resources)} resources in {len(files)} files valid (Kubernetes "
          f"{VERSION} strict, KEDA ScaledObject vendored schema); probes, requests, drain, "
          f"PDBs, autoscaler ok", file=sys.stderr)


if __name__ == "__main__":
    main()
