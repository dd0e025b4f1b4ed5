"""The ``mutator`` command: serve | mutate | certs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import yaml

from . import __version__

DEFAULT_CERT_DIR = Path("certs/dev")


def _cmd_serve(args: argparse.Namespace) -> int:
    from .certs import CertPaths  # cryptography: only the commands that need it import it
    from .webhook.admission import MutationOptions, ValidationOptions
    from .webhook.server import ServerSettings, run

    certs = CertPaths.in_dir(Path(args.certs_dir))
    settings = ServerSettings(
        policy_paths=[Path(p) for p in args.policies],
        certfile=Path(args.cert or certs.cert),
        keyfile=Path(args.key or certs.key),
        host=args.host,
        port=args.port,
        reload_interval=args.reload_interval,
        options=MutationOptions(
            fail_open=args.fail_open,
            exempt_namespaces=tuple(args.exempt_namespace),
            own_usernames=tuple(args.own_username),
        ),
        validation=ValidationOptions(
            fail_open=args.fail_open,
            exempt_namespaces=tuple(args.exempt_namespace),
            timeout=args.validation_timeout or None,
            isolate=args.isolate_validation,
        ),
        enable_cel=args.enable_k8s_native_validation,
        workers=max(1, args.workers),
    )
    if args.policy_source == "kubernetes":
        from .cluster.runtime import ClusterSettings

        settings.cluster = ClusterSettings(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            operations=[op.strip() for op in args.operation.split(",") if op.strip()],
            audit_interval=args.audit_interval,
            violations_limit=args.constraint_violations_limit,
            enable_cel=args.enable_k8s_native_validation,
        )
    run(settings)
    return 0


def _or(given: str | None, default: str) -> str:
    return default if given is None else given


def _cmd_certs(args: argparse.Namespace) -> int:
    from .certs import (
        DEFAULT_MUTATING_WEBHOOK,
        DEFAULT_VALIDATING_WEBHOOK,
        ca_bundle,
        default_hosts,
        kube_api_client,
        make_certs,
        patch_manifest_files,
        patch_webhook_configurations,
    )

    hosts = default_hosts(args.service, args.namespace) + list(args.host)
    paths = make_certs(Path(args.out), hosts, days=args.days, reuse_ca=not args.new_ca)
    print(f"CA:          {paths.ca_cert}")
    print(f"certificate: {paths.cert} (SANs: {', '.join(hosts)})")
    print(f"key:         {paths.key}")
    if not (args.patch_files or args.patch_webhooks):
        return 0
    bundle = ca_bundle(paths.ca_cert)
    if args.patch_files:
        try:
            changed = patch_manifest_files([Path(f) for f in args.patch_files], bundle)
        except (OSError, ValueError, yaml.YAMLError) as err:
            print(f"mutator certs: --patch-files: {err}", file=sys.stderr)
            return 1
        for f in args.patch_files:
            print(f"caBundle:    {f} ({'patched' if Path(f) in changed else 'unchanged'})")
    if args.patch_webhooks:
        from kubernetes.client import ApiException
        from kubernetes.config import ConfigException

        names = {
            kind: name
            for kind, name in (
                # the defaults live in certs.py, which the parser does not import (cryptography is slow to load)
                ("ValidatingWebhookConfiguration", _or(args.validating_webhook_name, DEFAULT_VALIDATING_WEBHOOK)),
                ("MutatingWebhookConfiguration", _or(args.mutating_webhook_name, DEFAULT_MUTATING_WEBHOOK)),
            )
            if name
        }
        try:
            with kube_api_client(args.kubeconfig) as api:
                patched = patch_webhook_configurations(api, names, bundle)
        except ConfigException as err:
            print(f"mutator certs: --patch-webhooks: no cluster configuration: {err}", file=sys.stderr)
            return 1
        except ApiException as err:
            print(f"mutator certs: --patch-webhooks: {err.status} {err.reason}: {err.body}", file=sys.stderr)
            return 1
        for ref in patched:
            print(f"caBundle:    {ref} (patched in the cluster)")
    return 0


def _cmd_mutate(args: argparse.Namespace) -> int:
    from .mutation.core import deep_copy
    from .policy import load_paths
    from .webhook.admission import mutate_review, review_for

    try:
        policies = load_paths(args.filename, keep_objects=True)
    except ValueError as err:
        print(f"mutator mutate: {err}", file=sys.stderr)
        return 2
    for err in policies.errors:
        print(f"error: rejected: {err}", file=sys.stderr)
    for err in policies.conflicts:
        print(f"warning: {err}", file=sys.stderr)
    status = 2 if policies.errors else 0
    outputs: list[object] = []
    for doc in policies.objects:
        review = review_for(doc.body)
        outcome = mutate_review(review, policies.mutation, policies.namespace)
        if outcome.error:
            print(f"error: {doc.describe()}: {outcome.error}", file=sys.stderr)
            status = max(status, 1)
            continue
        if args.patch:
            outputs.append({"source": doc.source, "kind": doc.kind, "name": doc.name, "patch": outcome.patch})
        else:
            import jsonpatch

            obj = deep_copy(doc.body)
            outputs.append(jsonpatch.apply_patch(obj, outcome.patch) if outcome.patch else obj)
    if args.jsonpath:
        return _print_jsonpath(args.jsonpath, outputs, status)
    if args.output == "json":
        sys.stdout.write(
            orjson.dumps(outputs if len(outputs) != 1 else outputs[0], option=orjson.OPT_INDENT_2).decode()
        )
        sys.stdout.write("\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(outputs, sort_keys=False) if outputs else "")
    return status


def _print_jsonpath(expression: str, outputs: list[object], status: int) -> int:
    """Print the values a JSONPath expression selects in each output, one per line (JSON for non-strings)."""
    from jsonpath_ng.ext import parse as jsonpath_parse

    try:
        compiled = jsonpath_parse(expression)
    except Exception as err:  # jsonpath-ng raises plain Exception for parse errors
        print(f"mutator mutate: --jsonpath {expression!r}: {err}", file=sys.stderr)
        return 2
    for output in outputs:
        for match in compiled.find(output):
            value = match.value
            sys.stdout.write((value if isinstance(value, str) else orjson.dumps(value).decode()) + "\n")
    return status


def _cmd_test(args: argparse.Namespace) -> int:
    from .manifests import ReportWriter, run_manifests

    def print_errors(errors: list) -> None:
        for err in errors:
            print(f"error: rejected: {err}", file=sys.stderr)

    writer = ReportWriter(args.output, sys.stdout)
    try:  # each report is written as soon as its object is checked (see mutator/manifests.py)
        run = run_manifests(
            args.filename,
            enable_cel=not args.disable_cel,
            on_errors=print_errors,
            on_report=writer.add,
            jobs=args.jobs,
        )
    except ValueError as err:
        print(f"mutator test: {err}", file=sys.stderr)
        return 2
    writer.close()
    print_errors(run.late_errors)  # files found not to parse while streamed
    if run.denied:
        return 1
    return 2 if run.errors else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import re

    from .verify import RunFilter, find_suites, run_suite

    try:
        run = RunFilter.parse(args.run) if args.run else None
    except re.error as err:
        print(f"mutator verify: --run {args.run!r}: {err}", file=sys.stderr)
        return 2
    passed = failed = 0
    for target in args.paths:
        try:
            suites = find_suites(target)
        except FileNotFoundError as err:
            print(f"mutator verify: {err}", file=sys.stderr)
            return 2
        for suite in suites:
            for result in run_suite(suite, run=run, enable_cel=not args.disable_cel):
                if result.passed:
                    passed += 1
                    if not args.quiet:
                        print(f"PASS {result.title}")
                else:
                    failed += 1
                    print(f"FAIL {result.title}: {result.reason}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mutator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the admission webhook over HTTPS")
    serve.add_argument("--policies", "-p", nargs="+", default=["examples"], help="policy files or directories")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--certs-dir", default=str(DEFAULT_CERT_DIR), help="where tls.crt and tls.key are")
    serve.add_argument("--cert", help="serving certificate (default: <certs-dir>/tls.crt)")
    serve.add_argument("--key", help="serving key (default: <certs-dir>/tls.key)")
    serve.add_argument("--reload-interval", type=float, default=1.0, help="seconds between policy file checks")
    serve.add_argument(
        "--fail-open",
        action="store_true",
        help="answer allowed (with a warning) when mutation or validation fails, instead of denying",
    )
    serve.add_argument(
        "--enable-k8s-native-validation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate K8sNativeValidation (CEL) code in templates (on by default, as in Gatekeeper)",
    )
    serve.add_argument(
        "--exempt-namespace",
        action="append",
        default=[],
        help="never mutate or validate requests in this namespace (glob; repeatable)",
    )
    serve.add_argument(
        "--own-username",
        action="append",
        default=[],
        help="never mutate requests from this user (mutator's service account; repeatable)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (pre-fork; each loads the policies); use the number of cores",
    )
    serve.add_argument(
        "--validation-timeout",
        type=float,
        default=2.5,
        help="seconds from a review's arrival to its validation deadline: an evaluation still running then is "
        "cut off and answered as an error, per --fail-open, with the reason (keep it under the validating "
        "webhook's timeoutSeconds, 3 by default, so the answer beats the API server's own timeout); 0 disables",
    )
    serve.add_argument(
        "--isolate-validation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate constraints in a child process of each worker, so a runaway policy can be cut off at "
        "--validation-timeout (the Rego and CEL engines cannot be interrupted in-process); with "
        "--no-isolate-validation a slow policy holds its worker until it ends",
    )
    serve.add_argument(
        "--policy-source",
        choices=("files", "kubernetes"),
        default="files",
        help="files: --policies (reloaded on change); kubernetes: watch the cluster's Gatekeeper resources",
    )
    serve.add_argument("--kubeconfig", help="kubeconfig for --policy-source kubernetes (default: in-cluster)")
    serve.add_argument("--namespace", default="mutator-system", help="mutator's namespace (where Config lives)")
    serve.add_argument(
        "--operation",
        default="webhook,mutation-webhook,audit,status",
        help="comma list of webhook, mutation-webhook, audit, status (as Gatekeeper's --operation)",
    )
    serve.add_argument("--audit-interval", type=float, default=60.0, help="seconds between audit runs")
    serve.add_argument(
        "--constraint-violations-limit", type=int, default=20, help="violations kept in each constraint's status"
    )
    serve.set_defaults(func=_cmd_serve)

    certs = sub.add_parser("certs", help="make a CA and a serving certificate; optionally patch caBundle")
    certs.add_argument("--out", default=str(DEFAULT_CERT_DIR))
    certs.add_argument("--service", default="mutator-webhook-service")
    certs.add_argument("--namespace", default="mutator-system")
    certs.add_argument("--host", action="append", default=[], help="extra SAN (DNS name or IP; repeatable)")
    certs.add_argument("--days", type=int, default=365)
    certs.add_argument("--new-ca", action="store_true", help="make a new CA even if one exists")
    certs.add_argument(
        "--patch-files",
        nargs="+",
        default=[],
        metavar="FILE",
        help="set caBundle (base64 of ca.crt) in the webhook configurations in these YAML files",
    )
    certs.add_argument(
        "--patch-webhooks",
        action="store_true",
        help="set caBundle in the cluster's webhook configurations (kubeconfig or in-cluster credentials)",
    )
    certs.add_argument("--kubeconfig", help="for --patch-webhooks (default: in-cluster, then ~/.kube/config)")
    certs.add_argument(
        "--validating-webhook-name",
        help="ValidatingWebhookConfiguration that --patch-webhooks patches ('' skips it; default: "
        "mutator-validating-webhook-configuration)",
    )
    certs.add_argument(
        "--mutating-webhook-name",
        help="MutatingWebhookConfiguration that --patch-webhooks patches ('' skips it; default: "
        "mutator-mutating-webhook-configuration)",
    )
    certs.set_defaults(func=_cmd_certs)

    mutate = sub.add_parser("mutate", help="mutate objects with the mutators given, print the result")
    mutate.add_argument(
        "-f",
        "--filename",
        nargs="+",
        required=True,
        action="extend",
        help="files or directories holding mutators and objects",
    )
    mutate.add_argument("--patch", action="store_true", help="print the JSON patches instead of the objects")
    mutate.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    mutate.add_argument(
        "--jsonpath",
        help="print only what this JSONPath selects in each result, e.g. '$.spec.containers[*].imagePullPolicy'",
    )
    mutate.set_defaults(func=_cmd_mutate)
    test = sub.add_parser("test", help="mutate, then validate objects against the policies given (for CI)")
    test.add_argument(
        "-f",
        "--filename",
        nargs="+",
        required=True,
        action="extend",
        help="files or directories holding policies (mutators, templates, constraints) and objects",
    )
    test.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    test.add_argument("--disable-cel", action="store_true", help="evaluate templates with Rego only")
    test.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=0,
        help="worker processes that parse and check the objects, forked after the policies load (default 0: one "
        "per CPU, up to 4, when the object files hold 2 MiB or more; else 1)",
    )
    test.set_defaults(func=_cmd_test)

    verify = sub.add_parser("verify", help="run Gatekeeper Suite files (test.gatekeeper.sh/v1alpha1)")
    verify.add_argument("paths", nargs="+", help="suite files or directories; DIR/... recurses")
    verify.add_argument(
        "--run", help="only tests or cases whose name matches this regex; TEST//CASE matches both (as gator)"
    )
    verify.add_argument("--disable-cel", action="store_true", help="evaluate templates with Rego only")
    verify.add_argument("--quiet", "-q", action="store_true", help="print only failures and the summary")
    verify.set_defaults(func=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
