#!/usr/bin/env bash
# Renders deploy/base, deploy/knative and deploy/activator with `kubectl kustomize`, validates
# every object against Kubernetes' OpenAPI schemas offline (`kubernetes-validate --strict`),
# and checks that the output holds what issue 15 lists: least-privilege RBAC, the gateway
# Deployment (replicas, /ready readiness, requests/limits, drain-long grace period,
# anti-affinity, non-root), its PodDisruptionBudget, the public LoadBalancer 80->8080 and
# 443->8443, the private ClusterIP 80->8081 and 443->8444, Knative's two ConfigMap keys, and
# the activator overlay's pods behind Knative's activator-service.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null; }
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  pip install --quiet --break-system-packages kubernetes-validate 2>/dev/null || pip install --quiet kubernetes-validate
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for overlay in base knative activator; do
  kubectl kustomize "deploy/$overlay" > "$OUT/$overlay.yaml"
done
python3 -m kubernetes_validate --strict --quiet "$OUT"/*.yaml
python3 - "$OUT" <<'PY'
import sys, yaml
out = sys.argv[1]
def load(name):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d}
def check(ok, what):
    if not ok:
        sys.exit(f"deploy check failed: {what}")

base = load("base")
check(("Namespace", "knoxy-system") in base, "the knoxy-system namespace")
check(("ServiceAccount", "knoxy") in base, "the ServiceAccount")
role = base[("ClusterRole", "knoxy")]
for rule in role["rules"]:
    check("*" not in rule["verbs"] and "*" not in rule["resources"], f"no wildcard in {rule}")
    if "secrets" in rule["resources"]:
        check(set(rule["verbs"]) <= {"get", "list", "watch"}, "secrets are only read")
granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
for need in [("networking.internal.knative.dev", "ingresses", "watch"), ("networking.internal.knative.dev", "ingresses/status", "update"),
             ("", "services", "watch"), ("discovery.k8s.io", "endpointslices", "watch"), ("", "secrets", "watch"),
             ("serving.knative.dev", "revisions", "watch")]:
    check(need in granted, f"the ClusterRole grants {need}")
lease = base[("Role", "knoxy-leader")]
check(any("leases" in r["resources"] for r in lease["rules"]), "the leader Lease Role")

deploy = base[("Deployment", "knoxy")]
spec = deploy["spec"]["template"]["spec"]
c = spec["containers"][0]
check(deploy["spec"]["replicas"] >= 2, "at least 2 replicas")
check(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness on /ready")
check(c["resources"]["requests"] and c["resources"]["limits"], "requests and limits")
check(spec["terminationGracePeriodSeconds"] >= 35, "a grace period covering --drain-delay 5 + --drain-timeout 30")
check("podAntiAffinity" in spec["affinity"], "anti-affinity")
check(spec["securityContext"]["runAsNonRoot"], "non-root")
check(("PodDisruptionBudget", "knoxy") in base, "a PodDisruptionBudget")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
def service(name, kind, want):
    s = base[("Service", name)]["spec"]
    check(s.get("type", "ClusterIP") == kind, f"{name} is a {kind}")
    got = {p["port"]: ports.get(p["targetPort"], p["targetPort"]) for p in s["ports"]}
    check(got == want, f"{name} ports {got} == {want}")
service("knoxy", "LoadBalancer", {80: 8080, 443: 8443})
service("knoxy-internal", "ClusterIP", {80: 8081, 443: 8444})
# The status leader finds the replicas through this headless Service's port named admin.
peers = base[("Service", "knoxy-peers")]["spec"]
check(peers.get("clusterIP") == "None", "knoxy-peers is headless")
check([(p["name"], ports.get(p["targetPort"])) for p in peers["ports"]] == [("admin", 9090)], "knoxy-peers names the admin port")

knative = load("knative")
check(knative[("ConfigMap", "config-network")]["data"] == {"ingress-class": "knoxy.ingress.networking.knative.dev"}, "config-network's ingress-class")
check("knoxy-queue" in knative[("ConfigMap", "config-deployment")]["data"]["queue-sidecar-image"], "config-deployment's queue-sidecar-image")
check(all(d["metadata"]["namespace"] == "knative-serving" for d in knative.values()), "Knative's namespace")

activator = load("activator")
a = activator[("Deployment", "knoxy-activator")]
check(a["metadata"]["namespace"] == "knative-serving", "the activator pods live where activator-service selects")
check(a["spec"]["template"]["metadata"]["labels"]["app"] == "activator", "activator-service's selector app: activator")
ac = a["spec"]["template"]["spec"]["containers"][0]
check({p["containerPort"] for p in ac["ports"]} >= {8012, 8013}, "Knative's activator ports")
check(any(x.startswith("--activator-http") for x in ac["args"]), "the gateway's activator listeners")
print("deploy: every object valid; base, knative and activator hold what issue 15 lists")
PY
