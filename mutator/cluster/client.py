"""The official ``kubernetes`` client, configured the way every mutator command needs it."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes import config as k8s_config


def api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """From ``kubeconfig`` when given, else the in-cluster service account, else ~/.kube/config."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)
