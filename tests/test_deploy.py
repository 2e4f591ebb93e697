"""``deploy/``: the Kubernetes example and the Dockerfile agree with the server they deploy
(probe path, port, the key's variable and Secret, threads vs CPUs, non-root and read-only), so
the example cannot rot; and the key reaches a real server through that variable."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from serve_util import get_status, need_serve_extra, running_server

need_serve_extra()
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: pip install pyyaml")

from fastsal.cli import build_parser  # noqa: E402
from fastsal.serve import API_KEY_ENV, ServeConfig, ServeError, api_key_from_env  # noqa: E402
from fastsal.serve.config import MIN_KEY_LENGTH  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _docs() -> dict[str, dict]:
    """Every object in deploy/kubernetes/*.yaml by kind (each kind once in the example)."""
    files = sorted(K8S.glob("*.yaml"))
    assert files, "no YAML under deploy/kubernetes"
    out: dict[str, dict] = {}
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            assert doc and {"apiVersion", "kind", "metadata"} <= set(doc), f"{f.name}: not a Kubernetes object"
            assert doc["kind"] not in out, f"{f.name}: a second {doc['kind']}"
            out[doc["kind"]] = doc
    assert {"Deployment", "Service", "Secret"} <= set(out)
    return out


def _cpus(quantity: object) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    return _docs()


@pytest.fixture(scope="module")
def container(k8s) -> dict:
    (c,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def _serve_args(container: dict):
    """The container's arguments as ``fastsal serve`` parses them (the image's entrypoint)."""
    return build_parser().parse_args(["serve", *container["args"]])


def test_port_and_probes_match_the_server(k8s, container):
    from fastapi.testclient import TestClient
    from serve_util import FakePredictor

    from fastsal.serve import create_app

    args = _serve_args(container)
    (port,) = container["ports"]
    assert port["containerPort"] == args.port and args.host == "0.0.0.0"
    probes = [container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")]
    for probe in probes:
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
    paths = {probe["httpGet"]["path"] for probe in probes}
    assert paths == {"/healthz"}
    # the path is the server's, answers without the key, and from the pod's own address
    app = create_app(ServeConfig(host="0.0.0.0", api_key="k" * 24), load=lambda source: FakePredictor())
    with TestClient(app, base_url="http://10.1.2.3:8000") as c:
        assert c.get(paths.pop()).status_code == 200
        assert c.get("/v1/models").status_code == 401
    service_port = k8s["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert k8s["Service"]["spec"]["selector"].items() <= labels.items()
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    expose = re.search(r"^EXPOSE (\d+)", DOCKERFILE.read_text(), re.M)
    assert expose and int(expose.group(1)) == args.port


def test_key_comes_from_the_secret_under_the_servers_variable(k8s, container):
    env = {e["name"]: e for e in container["env"]}
    ref = env[API_KEY_ENV]["valueFrom"]["secretKeyRef"]
    secret = k8s["Secret"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    # the example's key cannot serve: the server refuses it, so nobody deploys a published key
    assert len(secret["stringData"][ref["key"]]) < MIN_KEY_LENGTH
    with pytest.raises(ServeError, match="at least"):
        ServeConfig(api_key=secret["stringData"][ref["key"]])
    assert "--api-key-file" not in container["args"]  # the variable is used only without a key file


def test_threads_match_cpus_and_the_pod_runs_locked_down(k8s, container):
    args = _serve_args(container)
    res = container["resources"]
    assert _cpus(res["requests"]["cpu"]) == _cpus(res["limits"]["cpu"]) == args.threads * args.workers
    assert {"cpu", "memory"} <= set(res["limits"])
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M)
    assert pod["securityContext"]["runAsNonRoot"] is True and uid
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    # the one writable place the server needs: the engine cache, on a volume
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["FASTSAL_CACHE_DIR"]]]
    assert re.search(rf"^ENV FASTSAL_CACHE_DIR={env['FASTSAL_CACHE_DIR']}$", DOCKERFILE.read_text(), re.M)
    # SIGTERM gets the request timeout to finish what is in flight
    assert pod["terminationGracePeriodSeconds"] > args.timeout


def test_dockerfile_installs_the_serve_and_openvino_extras_and_runs_fastsal_serve():
    text = DOCKERFILE.read_text()
    assert re.search(r"pip install .*\"\.\[serve,openvino\]\"", text)
    assert 'ENTRYPOINT ["fastsal", "serve"]' in text


def test_api_key_from_the_environment():
    assert api_key_from_env({}) is None
    assert api_key_from_env({API_KEY_ENV: " " + "s" * 20 + "\n"}) == "s" * 20
    with pytest.raises(ServeError, match=f"{API_KEY_ENV} is set but empty"):
        api_key_from_env({API_KEY_ENV: "  "})


def test_server_enforces_the_key_given_by_environment_variable():
    key = "e" * 24
    with running_server(env={API_KEY_ENV: key}) as url:
        assert get_status(url + "v1/models") == 401
        req = urllib.request.Request(url + "v1/models", headers={"X-API-Key": key})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        assert get_status(url + "healthz") == 200


def test_readme_ray_serve_recipe_compiles_and_names_real_fastsal_functions():
    """The recipe is not run (Ray Serve takes a cluster to start), but it must stay valid Python
    whose fastsal imports exist, so it cannot rot silently."""
    import ast
    import importlib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M) if "@serve.deployment" in b]
    assert len(blocks) == 1
    tree = ast.parse(blocks[0])
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module.startswith("fastsal") for alias in node.names]
    assert imported
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
    import fastsal

    assert callable(fastsal.load) and "FASTSAL_API_KEY" in blocks[0] and API_KEY_ENV == "FASTSAL_API_KEY"
