{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "tcprepl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release named like the chart is not
repeated ("tcprepl", not "tcprepl-tcprepl").
*/}}
{{- define "tcprepl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tcprepl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator's pods. The operator admits pods with these
labels through masters' NetworkPolicies (--operator-pod-labels), so they
must stay in step with the flag below.
*/}}
{{- define "tcprepl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tcprepl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tcprepl.labels" -}}
helm.sh/chart: {{ include "tcprepl.chart" . }}
{{ include "tcprepl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tcprepl
{{- end }}

{{- define "tcprepl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tcprepl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "tcprepl.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace the operator watches; empty means all namespaces. */}}
{{- define "tcprepl.watchNamespace" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- default .Release.Namespace .Values.rbac.watchNamespace }}
{{- end }}
{{- end }}

{{/*
The operator's permissions. Keep in step with the +kubebuilder:rbac markers
in controllers/ (config/rbac/role.yaml); test/e2e checks that this covers
every generated rule and runs the operator with exactly these permissions.
*/}}
{{- define "tcprepl.rules" -}}
- apiGroups: ["replication.tcprepl.io"]
  resources: ["replicationmasters", "replicationworkers"]
  verbs: ["get", "list", "watch", "update", "patch"]
- apiGroups: ["replication.tcprepl.io"]
  resources: ["replicationmasters/status", "replicationworkers/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["replication.tcprepl.io"]
  resources: ["replicationmasters/finalizers", "replicationworkers/finalizers"]
  verbs: ["update"]
# SynapseReplications are only read and their status written: the operator
# creates nothing for them.
- apiGroups: ["replication.tcprepl.io"]
  resources: ["synapsereplications"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["replication.tcprepl.io"]
  resources: ["synapsereplications/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Only to delete the worker Deployments of operator versions before
# workers ran as StatefulSets.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  # delete: the operator rolls the pods of a master with standbys itself.
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# cert-manager Certificates for masters with spec.tls.certManager. Without
# cert-manager installed the rule grants nothing.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "update", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
