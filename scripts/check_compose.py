"""What scripts/check-compose checks beyond `docker compose config`: the services the
deployment needs and how they are wired (restart policies, health checks, the NATS health
gate, the model volume), the Prometheus and Grafana files they mount, and that every metric
the dashboard queries is one the code emits.

usage: check_compose.py RESOLVED_COMPOSE_YAML   (the output of `docker compose config`)
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Prometheus' own series
PROMETHEUS_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# What the dashboard must show (issue 19), each as a metric one of its queries reads.
MUST_SHOW = {
    "frames/s": "inside_frames_processed_total",
    "nudge latency": "inside_frame_to_nudge_seconds",
    "worker count": "up",
    "job lag": "inside_jobs_pending",
    "sockets": "inside_ws_connections",
    "errors": "inside_http_requests_total",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile",
    "by", "without", "on", "ignoring", "le", "job", "status", "and", "or", "unless", "offset",
    "bool", "group_left", "group_right", "topk", "bottomk", "clamp_min", "clamp_max", "abs",
    "vector", "scalar", "time", "delta", "deriv", "avg_over_time", "max_over_time",
}

problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def emitted_metrics():
    """Names in `counter!`/`gauge!`/`histogram!` (and describe_*) calls of the Rust code, and
    metric names the code keeps in `&str` constants (`const NATS_CONNECTED: &str = "…"`)."""
    pattern = re.compile(
        r'(?:(?:counter|gauge|histogram)!\(\s*|const [A-Z_]+: &str = )"([a-zA-Z_:][a-zA-Z0-9_:]*)"'
    )
    names = set()
    for path in ROOT.glob("**/*.rs"):
        if "target" in path.relative_to(ROOT).parts:
            continue
        names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def metric_names(expr):
    """Metric names a PromQL expression reads: identifiers outside label matchers and
    durations that are not functions, keywords or label names."""
    expr = re.sub(r'\{[^}]*\}', "", expr)  # label matchers
    expr = re.sub(r'\[[^\]]*\]', "", expr)  # range durations
    expr = re.sub(r'"[^"]*"', "", expr)
    words = re.findall(r'[a-zA-Z_:][a-zA-Z0-9_:]*', expr)
    grouping = set()
    for labels in re.findall(r'\b(?:by|without|on|ignoring)\s*\(([^)]*)\)', expr):
        grouping.update(w.strip() for w in labels.split(","))
    return {w for w in words if w not in PROMQL_WORDS and w not in grouping and not w.isdigit()}


def base_name(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_services(compose):
    services = compose.get("services", {})
    for name in ("postgres", "redis", "nats", "gateway", "worker", "prometheus", "grafana"):
        check(name in services, f"service {name!r} missing")
    for name, svc in services.items():
        check(svc.get("restart") in ("always", "unless-stopped", "on-failure"),
              f"{name}: no restart policy")
        check("healthcheck" in svc or name == "grafana", f"{name}: no healthcheck")
    gw_deps = services.get("gateway", {}).get("depends_on", {})
    check(gw_deps.get("nats", {}).get("condition") == "service_healthy",
          "gateway must wait for nats with condition: service_healthy")
    worker = services.get("worker", {})
    check(worker.get("depends_on", {}).get("nats", {}).get("condition") == "service_healthy",
          "worker must wait for nats with condition: service_healthy")
    check("8001/readyz" in json.dumps(worker.get("healthcheck", {})),
          "worker healthcheck must ask its /readyz on 8001")
    mounts = [v if isinstance(v, str) else f'{v.get("source")}:{v.get("target")}'
              for v in worker.get("volumes", [])]
    check(any(m.split(":")[0] == "ecapa-model" or m.startswith("ecapa-model") for m in mounts)
          and any(":/models/ecapa" in m for m in mounts),
          "worker: the model volume ecapa-model must be mounted at /models/ecapa")
    check("ECAPA_MODEL_DIR" in worker.get("environment", {}), "worker: ECAPA_MODEL_DIR not passed")


def check_prometheus():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config.get("scrape_configs", [])}
    check({"gateway", "worker"} <= set(jobs), "prometheus.yml must scrape jobs gateway and worker")
    worker = json.dumps(jobs.get("worker", {}))
    check('"worker"' in worker and "8001" in worker, "prometheus.yml: worker job must find worker:8001")


def check_grafana(emitted):
    prov = ROOT / "deploy/grafana/provisioning"
    sources = yaml.safe_load((prov / "datasources/prometheus.yaml").read_text())["datasources"]
    uids = {s["uid"] for s in sources if s.get("type") == "prometheus"}
    check(any(s.get("url") == "http://prometheus:9090" for s in sources),
          "the Grafana data source must point at http://prometheus:9090")
    providers = yaml.safe_load((prov / "dashboards/inside.yaml").read_text())["providers"]
    check(any(p["options"]["path"] == "/var/lib/grafana/dashboards" for p in providers),
          "the dashboard provider must read /var/lib/grafana/dashboards")
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/inside.json").read_text())
    known = emitted | PROMETHEUS_METRICS
    read = set()
    for panel in dashboard.get("panels", []):
        title = panel.get("title", "?")
        check(panel.get("datasource", {}).get("uid") in uids,
              f"panel {title!r}: data source is not the provisioned Prometheus")
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                read.add(base_name(name))
                check(base_name(name) in known,
                      f"panel {title!r} queries {name!r}, which the code does not emit")
    for what, metric in MUST_SHOW.items():
        check(metric in read, f"the dashboard shows no {what} ({metric})")
    return len(dashboard.get("panels", [])), len(read)


def main():
    compose = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
    check_services(compose)
    check_prometheus()
    panels, metrics = check_grafana(emitted_metrics())
    if problems:
        for p in problems:
            print(f"check-compose: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check-compose: services, Prometheus and Grafana wiring ok; dashboard: {panels} panels "
          f"reading {metrics} metrics, all emitted", file=sys.stderr)


if __name__ == "__main__":
    main()
