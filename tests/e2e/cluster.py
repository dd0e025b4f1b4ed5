"""A real Kubernetes API server for the end-to-end tests.

``Cluster`` gives the tests a kube-apiserver, a kubeconfig with cluster-admin rights, a ``kubectl`` helper and
an official ``kubernetes`` client. Where the cluster comes from, in order:

1. ``MUTATOR_E2E_KUBECONFIG=/path/to/kubeconfig``: an existing cluster (its current context) is used as is;
   nothing is started or stopped. The tests create and delete objects there: use a throwaway cluster.
2. ``KUBE_APISERVER_BIN=... ETCD_BIN=...`` (or ``KUBEBUILDER_ASSETS=<dir>`` holding both, as envtest users
   have them): etcd and kube-apiserver are started from these binaries.
3. Neither: ``build_apiserver.sh`` builds kube-apiserver and kubectl v1.20.2 from Debian's source package
   (once; cached in ``${MUTATOR_E2E_CACHE:-~/.cache/mutator-e2e}``), and they are started from there.

In cases 2 and 3 etcd and kube-apiserver listen on free 127.0.0.1 ports only, with their data, certificates
and logs in a temporary directory, each in its own process group; ``stop()`` (or leaving the ``with`` block)
kills both groups and removes the directory (``MUTATOR_E2E_KEEP_TMP=1`` keeps it, for the logs).
There is no controller-manager, scheduler or kubelet: admission, CRDs, RBAC and storage are real, but
Deployments do not create Pods, Pods stay Pending, and deleted namespaces stay Terminating.

kubectl is ``KUBECTL_BIN``, else the one next to ``KUBE_APISERVER_BIN``, else the cached build, else ``PATH``.

Run ``python -m tests.e2e.cluster`` to start one by hand and print its kubeconfig path (Ctrl-C stops it).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any, TextIO

import yaml

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_apiserver.sh"
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class ClusterError(RuntimeError):
    """The cluster could not be found, built or started."""


class KubectlError(subprocess.CalledProcessError):
    """``Cluster.kubectl(..., check=True)`` failed; the message carries kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}\nstdout: {(self.stdout or '').strip()}"


def cache_dir() -> Path:
    return Path(os.environ.get("MUTATOR_E2E_CACHE") or Path.home() / ".cache" / "mutator-e2e")


_running: weakref.WeakSet[Cluster] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_running):
        with contextlib.suppress(Exception):
            cluster.stop()


_build_lock = threading.Lock()
_built: set[Path] = set()


def build_binaries(cache: Path | None = None, *, out: TextIO | None = None) -> Path:
    """Run build_apiserver.sh (once per process and cache dir) and return the cache's bin directory.

    The script is idempotent and returns at once when the binaries are there. Its output goes to ``out``
    (default: this process's stderr).
    """
    cache = (cache or cache_dir()).expanduser()
    with _build_lock:
        if cache not in _built:
            env = {**os.environ, "MUTATOR_E2E_CACHE": str(cache)}
            stream = out if out is not None else sys.stderr
            proc = subprocess.Popen(
                ["bash", str(BUILD_SCRIPT)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                stream.write(line)
                stream.flush()
            if proc.wait() != 0:
                raise ClusterError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}); see its output above")
            _built.add(cache)
    return cache / "bin"


# --------------------------------------------------------------------------- helpers


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (free now; a race with other processes stays possible)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def _executable(path: str | os.PathLike[str] | None) -> Path | None:
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_file() and os.access(p, os.X_OK) else None


def _require_executable(var: str, value: str) -> Path:
    p = _executable(value)
    if p is None:
        raise ClusterError(f"{var}={value!r} is not an executable file")
    return p


def _no_proxy_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for our child processes: loopback traffic never goes through a proxy."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra or {})
    return env


def _pdeathsig_preexec() -> Any:
    """Linux: a preexec_fn giving the child SIGTERM if we die without cleaning up (e.g. on SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _apiserver_minor(binary: Path) -> int:
    """The minor version of a kube-apiserver binary ("Kubernetes v1.20.2" -> 20); 0 if unknown."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r"v1\.(\d+)", out)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------- PKI


def _write_pki(pki: Path) -> dict[str, Path | str]:
    """CA and serving certificate (made by our own certs tooling), service-account keys, admin token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mutator.certs import make_certs

    pki.mkdir(parents=True, exist_ok=True)

    def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append("kubernetes.default.svc.cluster.local")
    paths = make_certs(pki, [LOOPBACK, service_ip, *names], days=2, reuse_ca=False)

    # Service-account tokens: RS256, which every kube-apiserver version accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = secrets.token_hex(24)
    return {
        "ca": paths.ca_cert,
        "cert": paths.cert,
        "key": paths.key,
        "sa_key": write(pki / "sa.key", key_pem(sa_key)),
        "sa_pub": write(
            pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        ),
        # token,user,uid,"group": system:masters is the RBAC superuser group.
        "tokens": write(pki / "tokens.csv", f'{token},admin,admin,"system:masters"\n'.encode()),
        "token": token,
    }


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """A kube-apiserver for tests: ``with Cluster() as c: c.kubectl("get", "ns")``.

    Attributes after ``start()``: ``kubeconfig`` (Path), ``server`` (https URL), ``kubectl_bin`` (Path),
    ``managed`` (True when we started etcd and kube-apiserver ourselves), ``workdir`` (their temporary
    directory, managed only), ``start_seconds`` (time to ready, including any build).
    """

    def __init__(
        self,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        apiserver_bin: str | os.PathLike[str] | None = None,
        etcd_bin: str | os.PathLike[str] | None = None,
        kubectl_bin: str | os.PathLike[str] | None = None,
        start_timeout: float | None = None,
        build_output: TextIO | None = None,
    ) -> None:
        env = os.environ
        self._kubeconfig_arg = kubeconfig if kubeconfig is not None else env.get("MUTATOR_E2E_KUBECONFIG") or None
        assets = env.get("KUBEBUILDER_ASSETS")
        self._apiserver_arg = apiserver_bin or env.get("KUBE_APISERVER_BIN") or None
        self._etcd_arg = etcd_bin or env.get("ETCD_BIN") or None
        if assets and not (self._apiserver_arg or self._etcd_arg):
            self._apiserver_arg = str(Path(assets) / "kube-apiserver")
            self._etcd_arg = str(Path(assets) / "etcd")
        self._kubectl_arg = kubectl_bin or env.get("KUBECTL_BIN") or None
        self.start_timeout = start_timeout or float(env.get("MUTATOR_E2E_START_TIMEOUT") or 90)
        self._build_output = build_output

        self.kubeconfig: Path | None = None
        self.server: str = ""
        self.kubectl_bin: Path | None = None
        self.managed = False
        self.workdir: Path | None = None
        self.start_seconds = 0.0
        self._token = ""
        self._ca: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ---- which way ----------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """'kubeconfig', 'binaries' or 'build': where the cluster comes from."""
        if self._kubeconfig_arg:
            return "kubeconfig"
        if self._apiserver_arg or self._etcd_arg:
            return "binaries"
        return "build"

    def _find_kubectl(self, *near: Path) -> Path:
        if self._kubectl_arg:
            return _require_executable("KUBECTL_BIN", str(self._kubectl_arg))
        for d in [*near, cache_dir() / "bin"]:
            found = _executable(d / "kubectl")
            if found:
                return found
        on_path = shutil.which("kubectl")
        if on_path:
            return Path(on_path)
        raise ClusterError("no kubectl: set KUBECTL_BIN, put kubectl on PATH or run tests/e2e/build_apiserver.sh")

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Cluster:
        t0 = time.monotonic()
        mode = self.mode
        if mode == "kubeconfig":
            self._use_kubeconfig(Path(str(self._kubeconfig_arg)).expanduser())
        else:
            if mode == "binaries":
                if not (self._apiserver_arg and self._etcd_arg):
                    raise ClusterError("set both KUBE_APISERVER_BIN and ETCD_BIN (or neither)")
                apiserver = _require_executable("KUBE_APISERVER_BIN", str(self._apiserver_arg))
                etcd = _require_executable("ETCD_BIN", str(self._etcd_arg))
                self.kubectl_bin = self._find_kubectl(apiserver.parent)
            else:
                bin_dir = build_binaries(out=self._build_output)
                apiserver, etcd = bin_dir / "kube-apiserver", bin_dir / "etcd"
                self.kubectl_bin = (
                    _require_executable("KUBECTL_BIN", str(self._kubectl_arg))
                    if self._kubectl_arg
                    else bin_dir / "kubectl"
                )
            self._start_processes(apiserver, etcd)
        self.start_seconds = time.monotonic() - t0
        return self

    def _use_kubeconfig(self, path: Path) -> None:
        if not path.is_file():
            raise ClusterError(f"MUTATOR_E2E_KUBECONFIG={path} is not a file")
        cfg = yaml.safe_load(path.read_text()) or {}
        contexts = {c["name"]: c.get("context") or {} for c in cfg.get("contexts") or []}
        clusters = {c["name"]: c.get("cluster") or {} for c in cfg.get("clusters") or []}
        context = contexts.get(cfg.get("current-context", ""), {})
        self.server = clusters.get(context.get("cluster", ""), {}).get("server", "")
        self.kubeconfig = path
        self.kubectl_bin = self._find_kubectl()
        self.managed = False
        r = self.kubectl("version", timeout=30)
        if r.returncode != 0:
            raise ClusterError(f"cannot reach the cluster of {path}: {r.stderr.strip()}")

    def _start_processes(self, apiserver: Path, etcd: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mutator-e2e-"))
        self.managed = True
        _running.add(self)
        try:
            pki = _write_pki(self.workdir / "pki")
            self._token, self._ca = str(pki["token"]), Path(pki["ca"])
            minor = _apiserver_minor(apiserver)
            last_error: Exception | None = None
            for attempt in range(3):  # a free port can be taken between choosing and binding it
                try:
                    self._launch(apiserver, etcd, pki, minor, attempt)
                    return
                except ClusterError as e:
                    last_error = e
                    self._kill_all()
                    if "address already in use" not in str(e):
                        raise
            raise ClusterError(f"could not start after 3 attempts: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, apiserver: Path, etcd: Path, pki: dict[str, Any], minor: int, attempt: int) -> None:
        assert self.workdir is not None
        w = self.workdir
        etcd_port, peer_port, api_port = free_ports(3)
        etcd_url = f"http://{LOOPBACK}:{etcd_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        data = w / f"etcd-data-{attempt}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                "--name=e2e",
                f"--data-dir={data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--initial-cluster-state=new",
                "--logger=zap",
            ],
        )
        self._wait("etcd", lambda: b'"health":"true"' in self._get(f"{etcd_url}/health"))

        args = [
            str(apiserver),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki['cert']}",
            f"--tls-private-key-file={pki['key']}",
            f"--client-ca-file={pki['ca']}",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--token-auth-file={pki['tokens']}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki['sa_pub']}",
            f"--service-account-signing-key-file={pki['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if 0 < minor < 24:  # removed in 1.24; before that it defaults to serving plain HTTP on :8080
            args.append("--insecure-port=0")
        self._apiserver_args = args
        self._spawn("kube-apiserver", args)
        self.server = f"https://{LOOPBACK}:{api_port}"
        self.kubeconfig = w / "kubeconfig"
        self._write_kubeconfig(self.kubeconfig, Path(pki["ca"]), str(pki["token"]))
        self._wait("kube-apiserver", lambda: self._get(f"{self.server}/readyz").strip() == b"ok")
        # The "default" namespace is created by a bootstrap loop shortly after the API server is ready.
        default_ns = f"{self.server}/api/v1/namespaces/default"
        self._wait("namespace default", lambda: b'"name":"default"' in self._get(default_ns))

    def restart_apiserver(self, down_seconds: float = 1.0) -> None:
        """Stop kube-apiserver (etcd keeps the data), wait, start it again on the same port, wait for ready."""
        if not self.managed or "kube-apiserver" not in self._procs:
            raise ClusterError("restart_apiserver needs a cluster this harness started")
        _kill_group(self._procs.pop("kube-apiserver"))
        time.sleep(down_seconds)
        self._spawn("kube-apiserver", self._apiserver_args)
        self._wait("kube-apiserver", lambda: self._get(f"{self.server}/readyz").strip() == b"ok")

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir is not None
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            self._procs[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_no_proxy_env(),
                start_new_session=True,  # its own process group: stop() kills the whole group
                preexec_fn=_pdeathsig_preexec(),
            )

    def _get(self, url: str) -> bytes:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if url.startswith("https:"):
            ctx = ssl.create_default_context(cafile=str(self._ca))
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.build_opener(*handlers).open(req, timeout=2) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError, ValueError):
            return b""

    def _wait(self, what: str, ready: Any) -> None:
        assert self.workdir is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if ready():
                return
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    log = self.workdir / f"{name}.log"
                    raise ClusterError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}.log\n{_tail(self.workdir / f'{n}.log')}" for n in self._procs)
                raise ClusterError(f"{what} not ready after {self.start_timeout:.0f}s\n{logs}")
            time.sleep(0.1)

    def _write_kubeconfig(self, path: Path, ca: Path, token: str) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mutator-e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [
                {"name": "mutator-e2e", "context": {"cluster": "mutator-e2e", "user": "admin", "namespace": "default"}}
            ],
            "current-context": "mutator-e2e",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _kill_all(self) -> None:
        # kube-apiserver first, then etcd (reverse start order).
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            _kill_group(proc)

    def stop(self) -> None:
        """Kill what we started and remove its directory; a no-op for an existing cluster. Idempotent."""
        self._kill_all()
        if self.workdir is not None and os.environ.get("MUTATOR_E2E_KEEP_TMP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _running.discard(self)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the way
        with contextlib.suppress(Exception):
            self._kill_all()

    # ---- clients ------------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig=<ours> *args``; returns the CompletedProcess (text stdout/stderr).

        ``check=True`` raises ``KubectlError`` (a ``CalledProcessError`` showing stderr) on a non-zero exit.
        """
        if self.kubeconfig is None or self.kubectl_bin is None:
            raise ClusterError("the cluster is not started")
        cmd = [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}"]
        if self.workdir is not None:  # keep the discovery cache of a throwaway cluster out of ~/.kube
            cmd.append(f"--cache-dir={self.workdir / 'kube-cache'}")
        cmd += args
        env = _no_proxy_env({"KUBECONFIG": str(self.kubeconfig)})
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise KubectlError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this cluster (close it, or use it as a context manager)."""
        from kubernetes import client, config

        if self.kubeconfig is None:
            raise ClusterError("the cluster is not started")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group may hold children that outlived the leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    """Start a cluster by hand: ``python -m tests.e2e.cluster``; Ctrl-C stops it."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with Cluster() as c, contextlib.suppress(KeyboardInterrupt):
        print(f"ready in {c.start_seconds:.1f}s ({c.mode}): {c.server}", flush=True)
        print(f"export KUBECONFIG={c.kubeconfig}", flush=True)
        print(f"kubectl: {c.kubectl_bin}", flush=True)
        while True:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
