"""Renders k8s/ (the base and the GPU overlay) as kustomize does (with `kubectl kustomize` itself
where kubectl is installed, checked against this script's own rendering), validates every object against the Kubernetes schemas (kubernetes-validate, strict),
lints them with checkov, and checks the service's own deployment rules.

  python tests/k8s/check.py        (exit status 0 when everything holds)
"""
import copy
import os
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "k8s")
K8S_VERSION = "1.33.0"
# checkov checks that do not apply, with the reason (kept short and honest)
SKIPPED = {
    "CKV_K8S_43": "images are referenced by tag; the operator pins digests at deploy time",
    "CKV_K8S_35": "the API keys are mounted as a file already; no secret is in an env var",
    "CKV_K8S_21": "namespaces are set explicitly in every manifest",
}


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(directory):
    """The objects `kubectl kustomize` renders when kubectl is installed (kustomize v5 inside it),
    else render_here's; where both exist they must agree."""
    here = render_here(directory)
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"kustomize failed on {directory}:\n{r.stderr}")
        real = [d for d in yaml.safe_load_all(r.stdout) if d]
        key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
        if sorted(real, key=key) != sorted(here, key=key):
            raise SystemExit(f"{directory}: this script's rendering differs from kustomize's; fix render_here")
        return real
    return here


def render_here(directory):
    """What kustomize does with these kustomizations: resources, namespace, labels (not on
    selectors), images, and JSON 6902 patches, in kustomize's order."""
    kust = load(os.path.join(directory, "kustomization.yaml"))[0]
    docs = []
    for res in kust.get("resources", []):
        p = os.path.join(directory, res)
        docs += render_here(p) if os.path.isdir(p) else load(p)
    for patch in kust.get("patches", []):
        ops = load(os.path.join(directory, patch["path"]))[0]
        for d in docs:
            t = patch["target"]
            if d["kind"] == t["kind"] and d["metadata"]["name"] == t["name"]:
                for op in ops:
                    apply(d, op)
    ns = kust.get("namespace")
    for d in docs:
        if ns:
            if d["kind"] == "Namespace":
                d["metadata"]["name"] = ns
            else:
                d["metadata"]["namespace"] = ns
        for group in kust.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(group["pairs"])
            template = d.get("spec", {}).get("template")
            if group.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for img in kust.get("images", []):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = img.get("newName", name) + ":" + img.get("newTag", tag)
    return docs


def apply(doc, op):
    """The add/replace subset of JSON patch (RFC 6902) that the overlays use."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    target = doc
    for p in parts[:-1]:
        target = target[int(p)] if isinstance(target, list) else target[p]
    key = parts[-1]
    if isinstance(target, list):
        target[int(key)] = op["value"]
    else:
        if op["op"] == "replace" and key not in target:
            raise KeyError(f"replace of missing {op['path']}")
        target[key] = copy.deepcopy(op["value"])


RECOMMENDED_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                      "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"]


def own_rules(name, docs):
    problems = []
    kinds = {d["kind"] for d in docs}
    for d in docs:
        missing = [l for l in RECOMMENDED_LABELS if l not in d["metadata"].get("labels", {})]
        if missing:
            problems.append(f"{name}: {d['kind']}/{d['metadata']['name']} lacks {missing}")
    if "Ingress" not in kinds:
        problems.append(f"{name}: graders run outside the cluster: an Ingress is needed")
    for d in docs:
        if d["kind"] == "Ingress":
            spec = d["spec"]
            if not spec.get("tls") or not spec["tls"][0].get("secretName"):
                problems.append(f"{name}: the Ingress must terminate TLS")
            if "cert-manager.io/cluster-issuer" not in d["metadata"].get("annotations", {}):
                problems.append(f"{name}: the Ingress names no cert-manager issuer")
        if d["kind"] != "Deployment":
            continue
        if "replicas" in d["spec"] and "HorizontalPodAutoscaler" in kinds:
            problems.append(f"{name}: replicas beside the HorizontalPodAutoscaler would reset its count on every apply")
        spec_t = d["spec"]["template"]
        if [l for l in RECOMMENDED_LABELS if l not in spec_t["metadata"].get("labels", {})]:
            problems.append(f"{name}: the pod template lacks the recommended labels")
        if not spec_t["spec"].get("topologySpreadConstraints"):
            problems.append(f"{name}: replicas must be spread over nodes")
        c0 = spec_t["spec"]["containers"][0]
        image = c0["image"]
        first = image.split("/")[0]
        if "/" not in image or not ("." in first or ":" in first or first == "localhost") or ":" not in image.split("/")[-1] and "@" not in image:
            problems.append(f"{name}: image {image!r} must be fully qualified (registry host, path, tag or digest)")
        pause = c0.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pause < 5:
            problems.append(f"{name}: a preStop pause of at least 5 s must outlast the endpoint removal")
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        res = c["resources"]
        if res["requests"] != res["limits"]:
            problems.append(f"{name}: requests must equal limits (Guaranteed QoS)")
        env = {e["name"]: e for e in c.get("env", [])}
        threads = env.get("LAYERSCOPE_TORCH_THREADS", {})
        if threads.get("valueFrom", {}).get("resourceFieldRef", {}).get("resource") != "limits.cpu":
            problems.append(f"{name}: LAYERSCOPE_TORCH_THREADS must come from limits.cpu")
        cm = next(x for x in docs if x["kind"] == "ConfigMap")
        timeout = int(cm["data"]["LAYERSCOPE_REQUEST_TIMEOUT_SECS"])
        if spec["terminationGracePeriodSeconds"] <= timeout + pause:
            problems.append(f"{name}: terminationGracePeriodSeconds must exceed the preStop pause plus the request timeout {timeout}")
        if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
            problems.append(f"{name}: readiness must probe /readyz and liveness /healthz")
        sc, psc = c["securityContext"], spec["securityContext"]
        if not (psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc["capabilities"]["drop"] == ["ALL"] and psc["seccompProfile"]["type"] == "RuntimeDefault"):
            problems.append(f"{name}: security context is not locked down")
        if not any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]):
            problems.append(f"{name}: /tmp must be a writable emptyDir")
        if name == "gpu":
            if res["limits"].get("nvidia.com/gpu") != "1" or not spec.get("tolerations") or not spec.get("nodeSelector"):
                problems.append("gpu: needs nvidia.com/gpu limits, a toleration and a node selector")
    return problems


def main():
    failures = []
    checked = 0
    with tempfile.TemporaryDirectory() as out:
        for name, directory in [("base", os.path.join(ROOT, "base")), ("gpu", os.path.join(ROOT, "overlays", "gpu"))]:
            docs = render(directory)
            for d in docs:
                checked += 1
                try:
                    kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures.append(f"{name}: {d['kind']}/{d['metadata']['name']}: {e.message}")
            failures += own_rules(name, docs)
            os.makedirs(os.path.join(out, name))
            with open(os.path.join(out, name, "rendered.yaml"), "w") as f:
                yaml.safe_dump_all(docs, f)
        checkov = os.path.join(os.path.dirname(sys.executable), "checkov")
        r = subprocess.run([checkov, "-d", out, "--framework", "kubernetes", "--quiet", "--compact", "--skip-download", "--skip-check", ",".join(SKIPPED)], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append("checkov:\n" + r.stdout[-6000:] + r.stderr[-2000:])
    for f in failures:
        print(f)
    print(f"k8s: {checked} objects validated against Kubernetes {K8S_VERSION} and linted; {len(failures)} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
