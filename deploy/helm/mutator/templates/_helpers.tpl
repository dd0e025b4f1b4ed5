{{/* Labels on every object. */}}
{{- define "mutator.labels" -}}
app.kubernetes.io/name: mutator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image reference. */}}
{{- define "mutator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Namespaces left out of the webhooks and exempt in the server: the release namespace, then the values'. */}}
{{- define "mutator.exemptNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.exemptNamespaces -}}
{{- if ne . $.Release.Namespace -}}{{- $all = append $all . -}}{{- end -}}
{{- end -}}
{{- toJson $all -}}
{{- end -}}

{{/* The namespaceSelector of validation.gatekeeper.sh and mutation.gatekeeper.sh. */}}
{{- define "mutator.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: admission.gatekeeper.sh/ignore
      operator: DoesNotExist
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ include "mutator.exemptNamespaces" . }}
{{- end -}}

{{/* Arguments shared by both Deployments: mutator's global flags, then `serve` and the common ones. */}}
{{- define "mutator.serveArgs" -}}
{{- if eq (upper .Values.logLevel) "DEBUG" }}
- -v
{{- else if ne (upper .Values.logLevel) "INFO" }}
{{- fail (printf "logLevel: %q is not INFO or DEBUG" .Values.logLevel) }}
{{- end }}
- serve
- --host
- 0.0.0.0
- --port
- "8443"
- --certs-dir
- /certs
- --policy-source
- kubernetes
- --namespace={{ .Release.Namespace }}
{{- end -}}

{{/* The pod spec both Deployments share, but the container's args and resources. */}}
{{- define "mutator.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "mutator.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "mutator.env" -}}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
{{- end -}}

{{- define "mutator.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: 8443
    scheme: HTTPS
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: 8443
    scheme: HTTPS
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
{{- end -}}

{{- define "mutator.volumes" -}}
volumes:
  - name: cert
    secret:
      secretName: {{ .Values.tlsSecretName }}
      defaultMode: 0440
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end -}}

{{- define "mutator.volumeMounts" -}}
volumeMounts:
  - name: cert
    mountPath: /certs
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{- define "mutator.scheduling" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
