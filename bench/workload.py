"""The benchmark workload: one realistic Pod AdmissionReview and sets of 1, 20 and 100 realistic mutators.

The Pod is what a ReplicaSet controller sends for a three-container web service with a migration init
container (labels, annotations, ownerReferences, managedFields, env, ports, probes, resources,
securityContext, volumes).  The mutators are the kind a platform team runs: pull policy, security
defaults, capability sets, image mirroring, ownership labels, injected env vars, tolerations, DNS options
and resource defaults.  Every mutator applies to ``v1 Pod``; in the 100-mutator set about a fifth are
scoped (by namespace, kind, label or namespace selector, name) so that they do not match this Pod, and the
cost of deciding that is measured too.

The sets are nested: the 20-mutator set is the first 20 of the 100, the 1-mutator set the first one.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

POD_NAMESPACE = "shop"
POD_APPLY_TO: list[JSON] = [{"groups": [""], "versions": ["v1"], "kinds": ["Pod"]}]
MUTATION_API = "mutations.gatekeeper.sh/v1"
MIRROR = "mirror.example.com"


# --------------------------------------------------------------------------- the Pod


def _env(name: str, value: str) -> JSON:
    return {"name": name, "value": value}


def _secret_env(name: str, secret: str, key: str) -> JSON:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _field_env(name: str, path: str) -> JSON:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _probe(path: str, port: str, delay: int) -> JSON:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "initialDelaySeconds": delay,
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def _sa_mount() -> JSON:
    return {
        "name": "kube-api-access-7xq2m",
        "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    }


def _managed_fields() -> list[JSON]:
    """The managedFields entry the controller manager writes (abridged but of realistic shape and size)."""
    container_fields: JSON = {
        "f:env": {
            f'k:{{"name":"{n}"}}': {".": {}, "f:name": {}, "f:value": {}}
            for n in ("APP_ENV", "LOG_LEVEL", "HTTP_PORT", "GRPC_PORT", "DB_HOST", "DB_NAME", "CACHE_URL")
        },
        "f:image": {},
        "f:imagePullPolicy": {},
        "f:livenessProbe": {".": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}},
        "f:name": {},
        "f:ports": {'k:{"containerPort":8080,"protocol":"TCP"}': {".": {}, "f:containerPort": {}, "f:name": {}}},
        "f:readinessProbe": {".": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}},
        "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}}, "f:requests": {}},
        "f:terminationMessagePath": {},
        "f:terminationMessagePolicy": {},
        "f:volumeMounts": {'k:{"mountPath":"/etc/checkout"}': {".": {}, "f:mountPath": {}, "f:name": {}}},
    }
    return [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-11-20T09:14:03Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:generateName": {},
                    "f:labels": {
                        ".": {},
                        "f:app.kubernetes.io/name": {},
                        "f:app.kubernetes.io/version": {},
                        "f:pod-template-hash": {},
                    },
                    "f:ownerReferences": {".": {}, 'k:{"uid":"5c1f0d6e-9a7b-4c51-b1f3-0e2d7f3a9c11"}': {}},
                },
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"app"}': container_fields,
                        'k:{"name":"envoy"}': {**container_fields, "f:args": {}},
                        'k:{"name":"log-shipper"}': container_fields,
                    },
                    "f:dnsPolicy": {},
                    "f:enableServiceLinks": {},
                    "f:initContainers": {'k:{"name":"migrate"}': {**container_fields, "f:command": {}}},
                    "f:restartPolicy": {},
                    "f:schedulerName": {},
                    "f:securityContext": {},
                    "f:serviceAccountName": {},
                    "f:terminationGracePeriodSeconds": {},
                    "f:volumes": {
                        f'k:{{"name":"{n}"}}': {".": {}, "f:name": {}}
                        for n in ("config", "tls", "cache", "envoy-config", "varlog")
                    },
                },
            },
        }
    ]


def make_pod() -> JSON:
    """A Pod as the ReplicaSet controller creates it (before the scheduler and kubelet touch it)."""
    labels = {
        "app.kubernetes.io/name": "checkout-api",
        "app.kubernetes.io/instance": "checkout-api-prod",
        "app.kubernetes.io/version": "2.14.3",
        "app.kubernetes.io/component": "api",
        "app.kubernetes.io/part-of": "shop",
        "app.kubernetes.io/managed-by": "argocd",
        "pod-template-hash": "7d9f8b6c5d",
        "team": "payments",
        "tier": "backend",
        "security.example.com/pci": "in-scope",
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9102",
        "prometheus.io/path": "/metrics",
        "kubectl.kubernetes.io/default-container": "app",
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
        "checksum/config": "9c5a0e1f4b7d3c2a8e6f1b0d9c4e7a3f5b2d8c1e6a9f0b3d7c4e1a8f2b5d9c0e",
        "checksum/secrets": "3e7b1d9f0c4a6e2b8d5f1c7a0e3b9d6f2c8a4e1b7d0f5c9a3e6b2d8f4c1a7e0b",
        "argocd.argoproj.io/tracking-id": "shop-prod:apps/Deployment:shop/checkout-api",
    }
    app_env = [
        _env("APP_ENV", "production"),
        _env("LOG_LEVEL", "info"),
        _env("LOG_FORMAT", "json"),
        _env("HTTP_PORT", "8080"),
        _env("GRPC_PORT", "9090"),
        _env("DB_HOST", "checkout-db.shop.svc.cluster.local"),
        _env("DB_PORT", "5432"),
        _env("DB_NAME", "checkout"),
        _secret_env("DB_USER", "checkout-db-credentials", "username"),
        _secret_env("DB_PASSWORD", "checkout-db-credentials", "password"),
        _env("CACHE_URL", "redis://checkout-cache.shop.svc.cluster.local:6379/0"),
        _env("PAYMENTS_URL", "https://payments.payments.svc.cluster.local:8443"),
        _env("FEATURE_FLAGS", "new-cart,fast-checkout,apple-pay"),
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        _field_env("NODE_NAME", "spec.nodeName"),
    ]
    app = {
        "name": "app",
        "image": "registry.example.com/shop/checkout-api:2.14.3",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config=/etc/checkout/config.yaml", "--listen=:8080"],
        "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 9090, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9102, "protocol": "TCP"},
        ],
        "env": app_env,
        "envFrom": [{"configMapRef": {"name": "checkout-api-env"}}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "livenessProbe": _probe("/healthz", "http", 10),
        "readinessProbe": _probe("/readyz", "http", 5),
        "startupProbe": _probe("/healthz", "http", 0),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/checkout", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": True},
            {"name": "cache", "mountPath": "/var/cache/checkout"},
            _sa_mount(),
        ],
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    envoy = {
        "name": "envoy",
        "image": "envoyproxy/envoy:v1.31.2",
        "args": ["-c", "/etc/envoy/envoy.yaml", "--service-cluster", "checkout-api", "--log-level", "warn"],
        "ports": [
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "envoy-admin", "containerPort": 9901, "protocol": "TCP"},
        ],
        "env": [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace")],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "readinessProbe": _probe("/ready", "envoy-admin", 2),
        "volumeMounts": [
            {"name": "envoy-config", "mountPath": "/etc/envoy", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": True},
            _sa_mount(),
        ],
        "securityContext": {"runAsUser": 101, "capabilities": {"add": ["NET_BIND_SERVICE"]}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    shipper = {
        "name": "log-shipper",
        "image": "fluent/fluent-bit:3.1.9",
        "imagePullPolicy": "Always",
        "env": [_env("FLUENT_ELASTICSEARCH_HOST", "logs.observability.svc"), _env("FLUENT_ELASTICSEARCH_PORT", "9200")],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "96Mi"}},
        "volumeMounts": [{"name": "varlog", "mountPath": "/var/log/app", "readOnly": True}, _sa_mount()],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    migrate = {
        "name": "migrate",
        "image": "registry.example.com/shop/checkout-migrations:2.14.3",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/migrate"],
        "args": ["up", "--database=postgres://$(DB_HOST):5432/checkout", "--timeout=120s"],
        "env": [
            _env("DB_HOST", "checkout-db.shop.svc.cluster.local"),
            _secret_env("DB_USER", "checkout-db-credentials", "username"),
            _secret_env("DB_PASSWORD", "checkout-db-credentials", "password"),
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [_sa_mount()],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    volumes = [
        {"name": "config", "configMap": {"name": "checkout-api-config", "defaultMode": 420}},
        {"name": "tls", "secret": {"secretName": "checkout-api-tls", "defaultMode": 256}},
        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "envoy-config", "configMap": {"name": "checkout-envoy", "defaultMode": 420}},
        {"name": "varlog", "emptyDir": {}},
        {
            "name": "kube-api-access-7xq2m",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        },
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "checkout-api-7d9f8b6c5d-x2k4p",
            "generateName": "checkout-api-7d9f8b6c5d-",
            "namespace": POD_NAMESPACE,
            "uid": "0b8f6e2a-4c1d-4e7b-9a3f-2d6c8e1b5f70",
            "creationTimestamp": "2024-11-20T09:14:03Z",
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "checkout-api-7d9f8b6c5d",
                    "uid": "5c1f0d6e-9a7b-4c51-b1f3-0e2d7f3a9c11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": _managed_fields(),
        },
        "spec": {
            "initContainers": [migrate],
            "containers": [app, envoy, shipper],
            "volumes": volumes,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 45,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "checkout-api",
            "serviceAccount": "checkout-api",
            "securityContext": {"fsGroup": 10001},
            "schedulerName": "default-scheduler",
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "nodeSelector": {"node.example.com/pool": "general"},
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout-api"}},
                            },
                        }
                    ]
                }
            },
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
        },
        "status": {},
    }


def make_namespace() -> JSON:
    """The Namespace object of the Pod (namespaceSelector criteria read its labels)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": POD_NAMESPACE,
            "labels": {"kubernetes.io/metadata.name": POD_NAMESPACE, "env": "prod", "team": "payments"},
        },
    }


# --------------------------------------------------------------------------- the mutators

DEFAULT_MATCH: JSON = {
    "scope": "Namespaced",
    "kinds": [{"apiGroups": [""], "kinds": ["Pod"]}],
    "excludedNamespaces": ["kube-system", "kube-public", "gatekeeper-system", "mutator-system"],
}


def _resource(kind: str, name: str, spec: JSON, api_version: str = MUTATION_API) -> JSON:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _match(extra: JSON | None) -> JSON:
    match = dict(DEFAULT_MATCH)
    if extra:
        match.update(extra)
    return match


def assign(
    name: str,
    location: str,
    value: Any,
    *,
    must_not_exist: str | None = None,
    must_exist: str | None = None,
    match: JSON | None = None,
) -> JSON:
    params: JSON = {"assign": {"value": value}}
    tests = []
    if must_exist is not None:
        tests.append({"subPath": must_exist, "condition": "MustExist"})
    if must_not_exist is not None:
        tests.append({"subPath": must_not_exist, "condition": "MustNotExist"})
    if tests:
        params["pathTests"] = tests
    spec = {"applyTo": POD_APPLY_TO, "match": _match(match), "location": location, "parameters": params}
    return _resource("Assign", name, spec)


def assign_metadata(
    name: str, location: str, value: str | None = None, *, from_metadata: str = "", match: JSON | None = None
) -> JSON:
    assigned: JSON = {"fromMetadata": {"field": from_metadata}} if from_metadata else {"value": value}
    spec = {"match": _match(match), "location": location, "parameters": {"assign": assigned}}
    return _resource("AssignMetadata", name, spec)


def modify_set(
    name: str, location: str, values: list[Any], *, operation: str = "merge", match: JSON | None = None
) -> JSON:
    spec = {
        "applyTo": POD_APPLY_TO,
        "match": _match(match),
        "location": location,
        "parameters": {"operation": operation, "values": {"fromList": values}},
    }
    return _resource("ModifySet", name, spec)


def assign_image(
    name: str, location: str, *, domain: str = "", path: str = "", tag: str = "", match: JSON | None = None
) -> JSON:
    params = {k: v for k, v in (("assignDomain", domain), ("assignPath", path), ("assignTag", tag)) if v}
    spec = {"applyTo": POD_APPLY_TO, "match": _match(match), "location": location, "parameters": params}
    return _resource("AssignImage", name, spec, api_version="mutations.gatekeeper.sh/v1alpha1")


def _core_mutators() -> list[JSON]:
    """The first 20: a typical platform baseline (18 match the Pod, 2 are scoped elsewhere)."""
    containers = "spec.containers[name: *]"
    inits = "spec.initContainers[name: *]"
    ape = f"{containers}.securityContext.allowPrivilegeEscalation"
    mem_limit = f"{containers}.resources.limits.memory"
    return [
        assign("always-pull-images", f"{containers}.imagePullPolicy", "Always"),
        assign("always-pull-init-images", f"{inits}.imagePullPolicy", "Always"),
        assign("no-privilege-escalation", ape, False, must_not_exist=ape),
        assign(
            "run-as-non-root",
            "spec.securityContext.runAsNonRoot",
            True,
            must_not_exist="spec.securityContext.runAsNonRoot",
        ),
        assign(
            "seccomp-runtime-default",
            "spec.securityContext.seccompProfile.type",
            "RuntimeDefault",
            must_not_exist="spec.securityContext.seccompProfile",
        ),
        modify_set("drop-all-capabilities", f"{containers}.securityContext.capabilities.drop", ["ALL"]),
        modify_set("drop-all-init-capabilities", f"{inits}.securityContext.capabilities.drop", ["ALL"]),
        assign_image("mirror-images", f"{containers}.image", domain=MIRROR),
        assign_image("mirror-init-images", f"{inits}.image", domain=MIRROR),
        assign_metadata("owner-label", "metadata.labels.owner", "platform-team"),
        assign_metadata("mutated-annotation", 'metadata.annotations."mutator.example.com/mutated"', "true"),
        assign_metadata("namespace-label", 'metadata.labels."example.com/namespace"', from_metadata="namespace"),
        assign(
            "cluster-name-env",
            "spec.containers[name: app].env[name: CLUSTER_NAME]",
            {"name": "CLUSTER_NAME", "value": "prod-eu-west-1"},
        ),
        assign(
            "otel-endpoint-env",
            f"{containers}.env[name: OTEL_EXPORTER_OTLP_ENDPOINT]",
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc:4317"},
        ),
        assign(
            "dedicated-pool-toleration",
            "spec.tolerations[key: dedicated]",
            {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"},
            match={"namespaces": ["shop", "payments-*"]},
        ),
        assign("default-memory-limit", mem_limit, "256Mi", must_not_exist=mem_limit),
        assign(
            "dns-ndots",
            "spec.dnsConfig.options[name: ndots]",
            {"name": "ndots", "value": "2"},
        ),
        assign("no-service-links", "spec.enableServiceLinks", False),
        # scoped elsewhere: do not match this Pod
        assign(
            "system-priority",
            "spec.priorityClassName",
            "system-cluster-critical",
            match={"namespaces": ["kube-system"], "excludedNamespaces": None},
        ),
        assign(
            "batch-restart-never",
            "spec.restartPolicy",
            "Never",
            match={"labelSelector": {"matchLabels": {"tier": "batch"}}},
        ),
    ]


_LABELS = [
    ("cost-center", "cc-4711"),
    ("business-unit", "commerce"),
    ("data-classification", "confidential"),
    ("compliance", "pci-dss"),
    ("backup-policy", "none"),
    ("environment", "prod"),
    ("region", "eu-west-1"),
    ("support-tier", "gold"),
    ("lifecycle", "stable"),
    ("sla", "99.95"),
    ("oncall", "payments-oncall"),
    ("chargeback", "enabled"),
]
_ANNOTATIONS = [
    ("policy.example.com/baseline", "v3"),
    ("policy.example.com/reviewed-by", "platform-security"),
    ("sidecar.example.com/log-format", "json"),
    ("networking.example.com/egress-profile", "restricted"),
    ("backup.velero.io/backup-volumes-excludes", "cache,varlog"),
    ("karpenter.sh/do-not-disrupt", "false"),
    ("co.elastic.logs/enabled", "true"),
    ("ad.datadoghq.com/tags", '{"team":"payments"}'),
    ("vault.example.com/role", "checkout-api"),
    ("cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes", "cache"),
]
_ENV = [
    ("OTEL_SERVICE_NAMESPACE", "shop"),
    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
    ("OTEL_TRACES_SAMPLER_ARG", "0.05"),
    ("OTEL_METRICS_EXPORTER", "otlp"),
    ("OTEL_LOGS_EXPORTER", "none"),
    ("TZ", "UTC"),
    ("GOMAXPROCS", "2"),
    ("GOMEMLIMIT", "230MiB"),
    ("HTTP_PROXY_EXCLUDE", ".svc,.cluster.local"),
    ("REGION", "eu-west-1"),
]


def _extra_mutators() -> list[JSON]:
    """The other 80 of the 100-mutator set: 62 that match the Pod and 18 scoped elsewhere."""
    out: list[JSON] = []
    c_all = "spec.containers[name: *]"
    for key, value in _LABELS:
        out.append(assign_metadata(f"label-{key}", f'metadata.labels."example.com/{key}"', value))
    for key, value in _ANNOTATIONS:
        out.append(assign_metadata(f"annotation-{key.replace('/', '-').replace('.', '-')}"[:63], _q(key), value))
    for var, value in _ENV:
        out.append(
            assign(
                f"env-{var.lower().replace('_', '-')}",
                f"{c_all}.env[name: {var}]",
                {"name": var, "value": value},
            )
        )
    # per-container security and resource defaults
    for container in ("app", "envoy", "log-shipper"):
        c = f"spec.containers[name: {container}]"
        out.append(
            assign(
                f"{container}-read-only-root",
                f"{c}.securityContext.readOnlyRootFilesystem",
                True,
                must_not_exist=f"{c}.securityContext.readOnlyRootFilesystem",
            )
        )
        out.append(
            assign(
                f"{container}-cpu-request",
                f"{c}.resources.requests.cpu",
                "50m",
                must_not_exist=f"{c}.resources.requests.cpu",
            )
        )
        out.append(
            assign(
                f"{container}-run-as-user",
                f"{c}.securityContext.runAsUser",
                65534,
                must_not_exist=f"{c}.securityContext.runAsUser",
            )
        )
        out.append(assign(f"{container}-termination-policy", f"{c}.terminationMessagePolicy", "FallbackToLogsOnError"))
    inits = "spec.initContainers[name: *]"
    out += [
        assign(
            "init-no-privilege-escalation",
            f"{inits}.securityContext.allowPrivilegeEscalation",
            False,
            must_not_exist=f"{inits}.securityContext.allowPrivilegeEscalation",
        ),
        assign("init-run-as-non-root", f"{inits}.securityContext.runAsNonRoot", True),
        assign(
            "init-memory-limit",
            f"{inits}.resources.limits.memory",
            "128Mi",
            must_not_exist=f"{inits}.resources.limits.memory",
        ),
        assign("privileged-false", f"{c_all}.securityContext.privileged", False),
        assign("fs-group-change-policy", "spec.securityContext.fsGroupChangePolicy", "OnRootMismatch"),
        assign(
            "fs-group-default",
            "spec.securityContext.fsGroup",
            65534,
            must_not_exist="spec.securityContext.fsGroup",
        ),
        modify_set("supplemental-groups", "spec.securityContext.supplementalGroups", [65534]),
        modify_set(
            "prune-dangerous-capabilities",
            f"{c_all}.securityContext.capabilities.add",
            ["SYS_ADMIN", "NET_RAW", "SYS_PTRACE"],
            operation="prune",
        ),
        modify_set("app-json-logs", "spec.containers[name: app].args", ["--log-format=json"]),
        assign("linux-nodes", 'spec.nodeSelector."kubernetes.io/os"', "linux"),
        assign(
            "spot-toleration",
            'spec.tolerations[key: "node.example.com/spot"]',
            {"key": "node.example.com/spot", "operator": "Exists", "effect": "NoSchedule"},
        ),
        assign("dns-timeout", "spec.dnsConfig.options[name: timeout]", {"name": "timeout", "value": "2"}),
        assign(
            "readiness-gate",
            'spec.readinessGates[conditionType: "example.com/load-balancer-ready"]',
            {"conditionType": "example.com/load-balancer-ready"},
        ),
        assign(
            "no-automount-token",
            "spec.automountServiceAccountToken",
            False,
            must_not_exist="spec.automountServiceAccountToken",
        ),
        assign(
            "termination-grace",
            "spec.terminationGracePeriodSeconds",
            30,
            must_not_exist="spec.terminationGracePeriodSeconds",
        ),
        assign_image("pin-envoy-tag", "spec.containers[name: envoy].image", tag=":v1.31.2"),
        assign_metadata("name-annotation", 'metadata.annotations."example.com/pod-name"', from_metadata="name"),
        assign_metadata(
            "prod-namespace-label",
            'metadata.labels."example.com/prod"',
            "true",
            match={"namespaceSelector": {"matchLabels": {"env": "prod"}}},
        ),
    ]
    # scoped elsewhere: these must not match the Pod
    out += [
        assign(
            f"kube-system-{i}",
            f"spec.containers[name: *].env[name: KS_{i}]",
            {"name": f"KS_{i}", "value": "1"},
            match={"namespaces": ["kube-system"], "excludedNamespaces": None},
        )
        for i in range(4)
    ]
    out += [
        assign(
            f"monitoring-{i}",
            f"spec.containers[name: *].env[name: MON_{i}]",
            {"name": f"MON_{i}", "value": "1"},
            match={"namespaces": ["monitoring", "observability-*"]},
        )
        for i in range(3)
    ]
    out += [
        assign(
            f"not-shop-{i}",
            f"spec.containers[name: *].env[name: NS_{i}]",
            {"name": f"NS_{i}", "value": "1"},
            match={"excludedNamespaces": ["shop", "kube-*"]},
        )
        for i in range(2)
    ]
    out += [
        assign_metadata(
            f"deployment-only-{i}",
            f'metadata.labels."example.com/deploy-{i}"',
            "x",
            match={"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment", "StatefulSet"]}]},
        )
        for i in range(3)
    ]
    out += [
        assign(
            "gpu-toleration",
            'spec.tolerations[key: "nvidia.com/gpu"]',
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            match={"labelSelector": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
        ),
        assign(
            "frontend-replicas-env",
            "spec.containers[name: *].env[name: FRONTEND]",
            {"name": "FRONTEND", "value": "1"},
            match={"labelSelector": {"matchLabels": {"tier": "frontend"}}},
        ),
        assign_metadata(
            "dev-namespace-label",
            'metadata.labels."example.com/dev"',
            "true",
            match={"namespaceSelector": {"matchLabels": {"env": "dev"}}},
        ),
        assign(
            "jobs-active-deadline",
            "spec.activeDeadlineSeconds",
            3600,
            match={"name": "batch-*"},
        ),
        assign(
            "generated-only",
            "spec.containers[name: *].env[name: GENERATED]",
            {"name": "GENERATED", "value": "1"},
            match={"source": "Generated"},
        ),
        assign(
            "cluster-scope-only",
            "spec.containers[name: *].env[name: CLUSTER_SCOPED]",
            {"name": "CLUSTER_SCOPED", "value": "1"},
            match={"scope": "Cluster"},
        ),
    ]
    return out


def _q(annotation: str) -> str:
    return f'metadata.annotations."{annotation}"'


def all_mutators() -> list[JSON]:
    mutators = _core_mutators() + _extra_mutators()
    names = [m["metadata"]["name"] for m in mutators]
    if len(names) != len(set(names)):
        raise AssertionError(f"duplicate mutator names: {sorted({n for n in names if names.count(n) > 1})}")
    if len(mutators) != 100:
        raise AssertionError(f"expected 100 mutators, built {len(mutators)}")
    return mutators


def mutator_set(size: int) -> list[JSON]:
    """The first ``size`` mutators of the 100 (1, 20 or 100)."""
    return all_mutators()[:size]
